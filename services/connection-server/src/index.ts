export { createConnectionServer, validateConnectionServerConfig } from './server.ts';
export { hs256Verifier } from './hs256.ts';
export type { Hs256VerifierOptions } from './hs256.ts';
export type { ConnectionServer, ConnectionServerDeps } from './server.ts';
export { AuthError, createTokenVerifier, toAuthError } from './auth.ts';
export type { TokenVerifier } from './auth.ts';
export { defaultTopicAuthorizer, topicRoom } from './subscriptions.ts';
export type { TopicAuthorizer } from './subscriptions.ts';
export type { D2dPolicy } from './d2d.ts';
export { assembleConnectionServer, connectionServerId } from './assemble.ts';
export type { AssembleConnectionServerOptions, AssembledConnectionServer } from './assemble.ts';
export { LoadAgent, agentReply, assessLoad } from './load-agent.ts';
export type {
  CapacityDimension,
  CapacityLimits,
  LiveLoad,
  LoadAgentOptions,
  LoadAssessment,
  LoadSample,
} from './load-agent.ts';
export { BalancerConfigError, haproxyConfig } from './haproxy-config.ts';
export type { BalancedServer, HaproxyConfigOptions } from './haproxy-config.ts';
