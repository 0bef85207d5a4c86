/**
 * Any message proves a peer alive, so a heartbeat is only sent on a stream that has been quiet
 * for half a period: with ticks a period apart the silence never reaches 1.5 periods, well
 * within the peer's dead-after (3 periods by default), and a fleet busy with pushes and acks
 * does not pay for a heartbeat per agent on top.
 */
export function heartbeatDue(lastSentAt: number, now: number, heartbeatMs: number): boolean {
  return now - lastSentAt >= heartbeatMs / 2;
}
