import { exchange } from './ports.ts';

export interface MetadataBroker {
  readonly nodeId: number;
  readonly host: string;
  readonly port: number;
}

const METADATA_API_KEY = 3;
// v4 is the newest non-flexible version (no compact encodings) and Kafka 4.x still accepts it (0-13).
const METADATA_VERSION = 4;

function encodeMetadataRequest(correlationId: number, clientId: string): Buffer {
  const client = Buffer.from(clientId, 'utf8');
  const body = Buffer.alloc(2 + 2 + 4 + 2 + client.length + 4 + 1);
  let o = 0;
  o = body.writeInt16BE(METADATA_API_KEY, o);
  o = body.writeInt16BE(METADATA_VERSION, o);
  o = body.writeInt32BE(correlationId, o);
  o = body.writeInt16BE(client.length, o);
  o += client.copy(body, o);
  // An empty (not null) topic list: broker list only, no topics, no auto-creation.
  o = body.writeInt32BE(0, o);
  body.writeInt8(0, o);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length);
  return Buffer.concat([size, body]);
}

function decodeBrokers(frame: Buffer, correlationId: number): MetadataBroker[] {
  let o = 4;
  if (frame.readInt32BE(o) !== correlationId) throw new Error('metadata reply has the wrong correlation id');
  o += 4 + 4; // correlation id, throttle_time_ms
  const count = frame.readInt32BE(o);
  o += 4;
  const brokers: MetadataBroker[] = [];
  for (let i = 0; i < count; i++) {
    const nodeId = frame.readInt32BE(o);
    o += 4;
    const hostLen = frame.readInt16BE(o);
    o += 2;
    const host = frame.toString('utf8', o, o + hostLen);
    o += hostLen;
    const port = frame.readInt32BE(o);
    o += 4;
    const rackLen = frame.readInt16BE(o);
    o += 2 + Math.max(rackLen, 0);
    brokers.push({ nodeId, host, port });
  }
  return brokers;
}

/**
 * Brokers listed in a Metadata response from host:port. A KRaft broker lists itself only once it
 * has registered with the controller and been unfenced, so this is a readiness signal that a
 * mere TCP connect (the socket is bound well before requests are served) is not.
 */
export async function fetchMetadataBrokers(
  host: string,
  port: number,
  timeoutMs = 2000,
): Promise<MetadataBroker[]> {
  const correlationId = 0x5055_5348; // arbitrary; checked on the reply
  const reply = await exchange(
    host,
    port,
    encodeMetadataRequest(correlationId, 'pushline-devstack'),
    (buf) => buf.length >= 4 && buf.length >= 4 + buf.readInt32BE(0),
    timeoutMs,
  );
  return decodeBrokers(reply, correlationId);
}
