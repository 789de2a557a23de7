// The attached socket of a sandbox's container, as both kinds of sandbox (an execution's and a
// session's) read it: Docker's stream 1 goes to the runner's frame parser, stream 2 (the runner's
// own stderr) to a small capture kept for the failure message.
import type { Duplex } from 'node:stream';
import type { CappedCapture } from './output.ts';
import { DockerDemuxer, type FrameParser } from './protocol.ts';

export interface SocketEvents {
  /** The bytes broke Docker's or the runner's framing; nothing more is read from the socket. */
  violation: (message: string) => void;
  /** The stream ended or closed (no error), or the connection failed (error). */
  ended: (error?: Error) => void;
}

export function listenToRunner(socket: Duplex, parser: FrameParser, runnerStderr: CappedCapture, on: SocketEvents): void {
  const demux = new DockerDemuxer((stream, data) => {
    if (stream === 'stdout') parser.push(data);
    else runnerStderr.push(data);
  });
  socket.on('data', (chunk: Buffer) => {
    try {
      demux.push(chunk);
    } catch (e) {
      socket.removeAllListeners('data');
      on.violation(e instanceof Error ? e.message : String(e));
    }
  });
  socket.on('end', () => on.ended());
  socket.on('close', () => on.ended());
  socket.on('error', (e: Error) => on.ended(e));
}

/** Stops listening and destroys the socket; errors it raises later are of no interest. */
export function closeSocket(socket: Duplex): void {
  socket.removeAllListeners('data');
  socket.removeAllListeners('end');
  socket.removeAllListeners('close');
  socket.removeAllListeners('error');
  socket.on('error', () => {});
  socket.destroy();
}
