import type { DeliveryEvent } from '@pushline/protocol';
import type { RequestKind, SentRequest } from './traffic.ts';

/**
 * The reconciliation of one scenario: every request the suite sent, against what each device
 * received and what `<prefix>delivery-events` (or, for direct pushes, the HTTP answer) said.
 * Pure: the inputs are plain data, so the rules are unit-tested on their own.
 *
 * Unit of account: a (request, device) pair. A device target is one pair; a user target is one
 * pair per device that has an event or received the message, plus connected devices the fan-out
 * skipped (and one device-less pair when the processor found no device); a topic broadcast is
 * one pair for its aggregate event. Rules (docs/delivery-guarantees.md, docs/api.md):
 * - terminal outcomes are `delivered`, `rejected`, `not_connected`, `timeout`, `expired`;
 *   `stored` (terminal: false) waits for the offline store's terminal event;
 * - `timeout` (504 for a direct push) means "may have been delivered": a device that has the
 *   message is no contradiction; `not_connected`, `rejected` and `expired` are definite;
 * - direct pushes produce no delivery events: their single terminal answer is the HTTP result.
 */

export interface ReconcileEvent {
  readonly event: Pick<
    DeliveryEvent,
    'requestId' | 'deviceId' | 'outcome' | 'terminal' | 'source' | 'reason' | 'at'
  > & {
    readonly deliveredCount?: number | undefined;
  };
}

export interface ReconcileInput {
  readonly sent: readonly SentRequest[];
  readonly deviceIds: readonly string[];
  /** How many times `deviceId` received `messageId` (0: never). */
  readonly receiptCount: (deviceId: string, messageId: string) => number;
  readonly events: (requestId: string) => readonly ReconcileEvent[];
  readonly devicesOfUser: (userId: string) => readonly string[];
  /** Whether an accepted async request is on the push-requests topic (undefined: not known). */
  readonly inRequestLog?: (requestId: string) => boolean;
  /** Whether the device held one connection over the whole scenario (with `subscribed`: and its topic subscription). */
  readonly stayedConnected: (deviceId: string, subscribed: boolean) => boolean;
}

export const VIOLATIONS = [
  'silentLoss',
  'zeroTerminal',
  'severalTerminal',
  'deliveredWithoutReceipt',
  'receivedNotDelivered',
] as const;
export type Violation = (typeof VIOLATIONS)[number];

export interface Tally {
  readonly offered: number;
  readonly accepted: number;
  readonly acceptedByKind: Record<string, number>;
  readonly refused: number;
  readonly unknown: number;
  /** Accepted requests that reached at least one device. */
  readonly delivered: number;
  /** Receipts of an id a device had already received (it acked and dropped them). */
  readonly duplicates: number;
  /** Non-terminal `stored` events seen. */
  readonly stored: number;
  /** First terminal outcome per pair: `<source>:<outcome>[:<reason>]` (direct: `direct:<status> <outcome>`). */
  readonly outcomes: Record<string, number>;
  readonly violations: Record<Violation, number>;
  /** Pairs with a `timeout` outcome whose device did receive the message (allowed: "may have been delivered"). */
  readonly receivedTimeout: number;
  /** Refused or unanswered requests that a device received anyway. */
  readonly refusedButReceived: number;
  /** Accepted async requests (acknowledged by Kafka) that the suite never saw on the push-requests topic. */
  readonly acceptedNotInLog: number;
  /** Pairs whose device stayed connected the whole scenario, and how many of them ended delivered. */
  readonly stayed: { readonly accepted: number; readonly delivered: number };
  /** Up to EXAMPLES ids per violation, with what the suite saw. */
  readonly examples: Record<string, string[]>;
}

const EXAMPLES = 5;
const DEFINITE_NOT_DELIVERED = new Set(['not_connected', 'rejected', 'expired']);

export function reconcile(input: ReconcileInput): Tally {
  const violations = Object.fromEntries(VIOLATIONS.map((v) => [v, 0])) as Record<Violation, number>;
  const examples: Record<string, string[]> = {};
  const outcomes: Record<string, number> = {};
  const acceptedByKind: Record<string, number> = {};
  let accepted = 0;
  let refused = 0;
  let unknown = 0;
  let delivered = 0;
  let duplicates = 0;
  let stored = 0;
  let receivedTimeout = 0;
  let refusedButReceived = 0;
  let acceptedNotInLog = 0;
  const stayed = { accepted: 0, delivered: 0 };

  const flag = (v: Violation | 'receivedTimeout', id: string, detail: string) => {
    if (v !== 'receivedTimeout') violations[v]++;
    const list = (examples[v] ??= []);
    if (list.length < EXAMPLES) list.push(`${id}: ${detail}`);
  };
  const count = (key: string) => {
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  };
  const describe = (evs: readonly ReconcileEvent[]) =>
    evs.length === 0
      ? 'no events'
      : evs
          .map(
            ({ event: e }) =>
              `${e.terminal ? '' : 'non-terminal '}${e.source}:${e.outcome}${e.reason ? `:${e.reason}` : ''}`,
          )
          .join(', ');

  /** One (request, device) pair of the async path. */
  const asyncPair = (
    sent: SentRequest,
    deviceId: string | undefined,
    evs: readonly ReconcileEvent[],
    received: boolean,
    stayedConnected: boolean,
  ) => {
    const terms = evs.filter((e) => e.event.terminal);
    stored += evs.length - terms.length;
    const label = deviceId === undefined ? sent.id : `${sent.id} → ${deviceId}`;
    const inLog = input.inRequestLog?.(sent.id);
    const detail = `${describe(evs)}; device ${received ? 'received it' : 'never received it'}${stayedConnected ? ', stayed connected' : ''}${inLog === false ? '; not on the push-requests topic' : ''}`;
    const first = [...terms].sort((a, b) => a.event.at - b.event.at)[0]?.event;
    if (first) count(`${first.source}:${first.outcome}${first.reason ? `:${first.reason}` : ''}`);
    if (terms.length === 0) flag('zeroTerminal', label, detail);
    if (terms.length > 1) flag('severalTerminal', label, detail);
    const claimsDelivered = terms.some((e) => e.event.outcome === 'delivered');
    if (!received && (terms.length === 0 || claimsDelivered)) flag('silentLoss', label, detail);
    if (!received && claimsDelivered && deviceId !== undefined)
      flag('deliveredWithoutReceipt', label, detail);
    if (received && terms.some((e) => DEFINITE_NOT_DELIVERED.has(e.event.outcome)))
      flag('receivedNotDelivered', label, detail);
    if (received && !claimsDelivered && terms.some((e) => e.event.outcome === 'timeout')) {
      receivedTimeout++;
      flag('receivedTimeout', label, detail);
    }
    if (stayedConnected) {
      stayed.accepted++;
      if (received && first?.outcome === 'delivered') stayed.delivered++;
    }
  };

  for (const sent of input.sent) {
    if (sent.status !== 'accepted') {
      if (sent.status === 'refused') refused++;
      else unknown++;
      const anyReceipt =
        sent.kind === 'publish-topic' || sent.kind === 'publish-user'
          ? input.deviceIds.some((d) => input.receiptCount(d, sent.id) > 0)
          : input.receiptCount(sent.targetId, sent.id) > 0;
      if (anyReceipt) refusedButReceived++;
      continue;
    }
    accepted++;
    acceptedByKind[sent.kind] = (acceptedByKind[sent.kind] ?? 0) + 1;
    if (sent.kind !== 'direct' && input.inRequestLog?.(sent.id) === false) acceptedNotInLog++;
    const receivers = receiversOf(input, sent);
    if (receivers.length > 0) delivered++;
    for (const d of receivers) duplicates += input.receiptCount(d, sent.id) - 1;

    switch (sent.kind as RequestKind) {
      case 'publish-device':
      case 'kafka-device': {
        const evs = input
          .events(sent.id)
          .filter((e) => (e.event.deviceId ?? sent.targetId) === sent.targetId);
        asyncPair(
          sent,
          sent.targetId,
          evs,
          receivers.length > 0,
          input.stayedConnected(sent.targetId, false),
        );
        break;
      }
      case 'publish-user': {
        const evs = input.events(sent.id);
        const devices = input.devicesOfUser(sent.targetId);
        const deviceless = evs.filter((e) => e.event.deviceId === undefined);
        const fannedOut = evs.some((e) => e.event.deviceId !== undefined);
        // Pairs that need their own terminal event: devices with events, devices that received
        // it, and, when the processor fanned out, connected devices it skipped (nothing tells
        // the sender about those). A device-less `no_connected_devices` answers for the whole
        // user: when it is wrong, the stayed-connected ratio shows it.
        const pairs = new Set<string>();
        for (const e of evs) if (e.event.deviceId !== undefined) pairs.add(e.event.deviceId);
        for (const d of devices) {
          if (receivers.includes(d) || (fannedOut && input.stayedConnected(d, false))) pairs.add(d);
        }
        for (const d of pairs) {
          const own = evs.filter((e) => e.event.deviceId === d);
          // A device-less terminal event (no devices, or the ttl had passed) answers for every
          // device of the user that has none of its own.
          asyncPair(
            sent,
            d,
            own.length === 0 ? deviceless : own,
            receivers.includes(d),
            devices.includes(d) && input.stayedConnected(d, false),
          );
        }
        const answeredByDeviceless = [...pairs].some((d) => !evs.some((e) => e.event.deviceId === d));
        if ((deviceless.length > 0 && !answeredByDeviceless) || pairs.size === 0)
          asyncPair(sent, undefined, deviceless, false, false);
        for (const d of devices) if (!pairs.has(d) && input.stayedConnected(d, false)) stayed.accepted++;
        break;
      }
      case 'publish-topic': {
        const evs = input.events(sent.id);
        const terms = evs.filter((e) => e.event.terminal);
        const first = terms[0]?.event;
        const detail = `${describe(evs)}; ${receivers.length} devices received it`;
        if (first) count(`${first.source}:${first.outcome} (topic)`);
        if (terms.length === 0) flag('zeroTerminal', sent.id, detail);
        if (terms.length > 1) flag('severalTerminal', sent.id, detail);
        if (terms.length === 0 && receivers.length === 0) flag('silentLoss', sent.id, detail);
        const claimed = first?.deliveredCount ?? 0;
        if (first?.outcome === 'delivered' && claimed > receivers.length)
          flag('deliveredWithoutReceipt', sent.id, `${detail}; the event counts ${claimed}`);
        for (const d of input.deviceIds) {
          if (!input.stayedConnected(d, true)) continue;
          stayed.accepted++;
          if (receivers.includes(d)) stayed.delivered++;
        }
        break;
      }
      case 'direct': {
        const received = receivers.length > 0;
        const outcome = sent.outcome ?? 'unknown';
        const detail = `answered ${sent.httpStatus} ${outcome}${sent.reason ? ` (${sent.reason})` : ''}; device ${received ? 'received it' : 'never received it'}`;
        count(`direct:${sent.httpStatus} ${outcome}${sent.reason ? `:${sent.reason}` : ''}`);
        if (outcome === 'delivered' && !received) {
          flag('silentLoss', sent.id, detail);
          flag('deliveredWithoutReceipt', sent.id, detail);
        }
        if (received && DEFINITE_NOT_DELIVERED.has(outcome)) flag('receivedNotDelivered', sent.id, detail);
        if (received && outcome === 'timeout') {
          receivedTimeout++;
          flag('receivedTimeout', sent.id, detail);
        }
        if (input.stayedConnected(sent.targetId, false)) {
          stayed.accepted++;
          if (received && outcome === 'delivered') stayed.delivered++;
        }
        break;
      }
    }
  }

  return {
    offered: input.sent.length,
    accepted,
    acceptedByKind,
    refused,
    unknown,
    delivered,
    duplicates,
    stored,
    outcomes,
    violations,
    receivedTimeout,
    refusedButReceived,
    acceptedNotInLog,
    stayed,
    examples,
  };
}

function receiversOf(input: ReconcileInput, sent: SentRequest): string[] {
  const candidates =
    sent.kind === 'publish-topic'
      ? input.deviceIds
      : sent.kind === 'publish-user'
        ? input.devicesOfUser(sent.targetId)
        : [sent.targetId];
  return candidates.filter((d) => input.receiptCount(d, sent.id) > 0);
}

/** Accepted async requests still waiting for a terminal event (what the settle phase waits on). */
export function unsettled(input: Pick<ReconcileInput, 'sent' | 'events'>): number {
  let n = 0;
  for (const s of input.sent) {
    if (s.status === 'pending') {
      n++;
      continue;
    }
    if (s.status !== 'accepted' || s.kind === 'direct') continue;
    const evs = input.events(s.id);
    const terminal = evs.filter((e) => e.event.terminal);
    if (terminal.length === 0) {
      n++;
      continue;
    }
    // A user target is settled when every device that got a stored event has its terminal one too.
    if (s.kind === 'publish-user') {
      const storedDevices = new Set(evs.filter((e) => !e.event.terminal).map((e) => e.event.deviceId));
      for (const d of storedDevices) if (!terminal.some((e) => e.event.deviceId === d)) n++;
    }
  }
  return n;
}

export function stayedRatio(t: Tally): number | null {
  return t.stayed.accepted === 0 ? null : t.stayed.delivered / t.stayed.accepted;
}

/** The suite's bar for devices that stayed connected: 99.999%. */
export const STAYED_MIN_RATIO = 0.99999;
export const STAYED_MIN_LABEL = '99.999%';
