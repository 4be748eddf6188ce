export type { MessageProcessor } from './message-processor.ts';
export { decodePushRequest } from './request-decoder.ts';
export { KeyedChains } from './keyed-chains.ts';
export { LEDGER_SCRIPTS, RequestLedger, ClaimAbandonedError } from './request-ledger.ts';
export { assembleMessageProcessor } from './assemble.ts';
export type { AssembledMessageProcessor } from './assemble.ts';
