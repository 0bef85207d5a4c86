/**
 * Splits the byte stream of an interactive (`prompt`) Runtime API session into replies.
 *
 * HAProxy 2.6 prints `\n> ` after every command's output, but not always the blank line
 * before it (`del server`, some `add server` errors), so replies are framed by the prompt,
 * never by blank lines. The first frame is the empty answer to `prompt` itself.
 */
export class PromptFramer {
  private buffer = "";
  // Where the next search for a prompt starts, so a large reply arriving in many chunks
  // is scanned once rather than from its beginning on every chunk.
  private scanFrom = 0;

  push(chunk: string): string[] {
    this.buffer += chunk;
    const replies: string[] = [];
    let start = 0;
    for (;;) {
      const at = this.buffer.indexOf(PROMPT, Math.max(start, this.scanFrom));
      if (at === -1) break;
      replies.push(trimTrailingNewlines(this.buffer.slice(start, at)));
      start = at + PROMPT.length;
      this.scanFrom = start;
    }
    if (start > 0) {
      this.buffer = this.buffer.slice(start);
      this.scanFrom = 0;
    }
    // A prompt may straddle two chunks: rescan its first characters next time.
    this.scanFrom = Math.max(0, this.buffer.length - (PROMPT.length - 1));
    return replies;
  }

  /** Text received after the last prompt: a reply still in progress. */
  get pending(): string {
    return this.buffer;
  }
}

const PROMPT = "\n> ";

function trimTrailingNewlines(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 10) end--;
  return text.slice(0, end);
}
