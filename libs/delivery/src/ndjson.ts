/** A line longer than the splitter's limit: the peer is not speaking the agreed format. */
export class LineTooLongError extends Error {
  override readonly name = 'LineTooLongError';
  readonly limit: number;

  constructor(limit: number) {
    super(`line longer than ${limit} bytes`);
    this.limit = limit;
  }
}

const NEWLINE = 0x0a;

/**
 * Splits a byte stream into newline-delimited lines as chunks arrive. Works on bytes, not text:
 * `\n` never occurs inside a multi-byte UTF-8 sequence, so a character cut between two chunks is
 * joined before its line is decoded.
 */
export class LineSplitter {
  readonly #maxLineBytes: number;
  #rest: Buffer | undefined;

  /** `maxLineBytes` bounds what is buffered while a line is incomplete. */
  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** The complete lines this chunk ends (without their `\n`); throws `LineTooLongError`. */
  push(chunk: Buffer): string[] {
    const data = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    const lines: string[] = [];
    let start = 0;
    for (let nl = data.indexOf(NEWLINE); nl !== -1; nl = data.indexOf(NEWLINE, start)) {
      if (nl - start > this.#maxLineBytes) throw new LineTooLongError(this.#maxLineBytes);
      lines.push(data.toString('utf8', start, nl));
      start = nl + 1;
    }
    if (data.length - start > this.#maxLineBytes) throw new LineTooLongError(this.#maxLineBytes);
    this.#rest = start < data.length ? data.subarray(start) : undefined;
    return lines;
  }

  /** What followed the last `\n` when the stream ended, if anything. */
  end(): string | undefined {
    const rest = this.#rest;
    this.#rest = undefined;
    return rest?.toString('utf8');
  }
}
