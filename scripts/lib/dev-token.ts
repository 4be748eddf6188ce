import { SignJWT } from 'jose';

export interface DevTokenClaims {
  readonly device: string;
  readonly user: string;
  readonly tenant?: string | undefined;
  readonly topics?: readonly string[] | undefined;
  readonly ttlSeconds: number;
}

/** A device token (HS256) signed with the dev secret, as `npm run token` prints it. */
export function mintDevToken(secret: string, claims: DevTokenClaims): Promise<string> {
  const extra: Record<string, unknown> = { uid: claims.user };
  if (claims.tenant) extra['tid'] = claims.tenant;
  if (claims.topics?.length) extra['topics'] = [...claims.topics];
  return new SignJWT(extra)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(claims.device)
    .setIssuedAt()
    .setExpirationTime(`${claims.ttlSeconds}s`)
    .sign(new TextEncoder().encode(secret));
}
