export { createMessageProcessor } from './message-processor.ts';
export type { MessageProcessor, MessageProcessorDeps } from './message-processor.ts';
export { decodePushRequest } from './request-decoder.ts';
export { KeyedChains } from './keyed-chains.ts';
export { LEDGER_SCRIPTS, RequestLedger, ClaimAbandonedError } from './request-ledger.ts';
export { assembleMessageProcessor, processorInstanceId } from './assemble.ts';
export type { AssembleMessageProcessorOptions, AssembledMessageProcessor } from './assemble.ts';
