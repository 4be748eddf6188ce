export { createMessageProcessor } from './service.ts';
export type { MessageProcessor, MessageProcessorDeps } from './service.ts';
export { decodePushRequest } from './request-decoder.ts';
export type { DecodeResult } from './request-decoder.ts';
export type { DecodeLimits } from './request-decoder.ts';
export { KeyedChains } from './keyed-chains.ts';
export { Semaphore } from './semaphore.ts';
export {
  LEDGER_SCRIPTS,
  RequestLedger,
  ClaimAbandonedError,
  NO_ORIGIN_SCOPE,
  ledgerKeys,
} from './request-ledger.ts';
export type { Claim, ClaimStatus, RequestLedgerOptions } from './request-ledger.ts';
export { RecordAbandonedError } from './push-request-consumer.ts';
export { DependencyGate, DependencyError, isRedisUnavailableError } from './dependency-gate.ts';
export type { Dependency, DependencyGateOptions } from './dependency-gate.ts';
export { assembleMessageProcessor, processorInstanceId } from './assemble.ts';
export type { AssembleMessageProcessorOptions, AssembledMessageProcessor } from './assemble.ts';
