export { createMessageProcessor } from './service.ts';
export type { MessageProcessor, MessageProcessorDeps } from './service.ts';
export { decodePushRequest } from './request-decoder.ts';
export type { DecodeResult } from './request-decoder.ts';
export { Semaphore, runKeyed } from './keyed-runner.ts';
export type { KeyedRunResult } from './keyed-runner.ts';
export { RequestLedger, ClaimAbandonedError } from './request-ledger.ts';
export type { ClaimResult, RequestLedgerOptions } from './request-ledger.ts';
export { BatchInterruptedError } from './processor.ts';
