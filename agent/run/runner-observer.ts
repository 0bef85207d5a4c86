/** How an apply ended, over every socket: all converged, some backends failed, or none reachable. */
export type ApplyOutcome = "converged" | "partial" | "failed";

/** What the agent's run loop reports as it goes (for metrics); every method is a plain notification. */
export interface RunnerObserver {
  controllerConnected(): void;
  controllerDisconnected(): void;
  pushReceived(): void;
  acked(backend: string): void;
  nacked(backend: string): void;
  applied(outcome: ApplyOutcome): void;
  driftRepaired(backend: string): void;
}
