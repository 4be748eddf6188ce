export type { DeliveryTransport, OutgoingMessage, RoutedResult } from './types.ts';
export { DeliveryTransportError, InternalAuthError, PartialDeliveryError } from './errors.ts';
export type { TransportFailure } from './errors.ts';
export { HttpDeliveryTransport, DELIVER_PATH, BROADCAST_PATH } from './http-transport.ts';
export type { HttpDeliveryTransportOptions } from './http-transport.ts';
export { DeviceLocator } from './locator.ts';
export type { DeviceLocatorOptions, LocatorStats } from './locator.ts';
export { MessageRouter } from './router.ts';
export type { MessageRouterOptions, LocalDelivery } from './router.ts';
