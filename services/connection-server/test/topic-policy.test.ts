import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultTopicAuthorizer } from '@pushline/connection-server';
import { Identifier } from '@pushline/protocol';
import fc from 'fast-check';

/** Every character an identifier (user id, topic) may hold, the separators first. */
const ID_CHARS = [...'.:_@-', ...'abcAZ019'];
const idChar = fc.constantFrom(...ID_CHARS);
/** Identifiers, short and rich in separators, so that prefixes of each other come up often. */
const uid = fc.string({ unit: idChar, minLength: 1, maxLength: 12 });
/** Pairs of distinct user ids where one extends the other: the shape of the reported attack. */
const extendingPair = fc
  .tuple(uid, fc.string({ unit: idChar, minLength: 1, maxLength: 6 }))
  .map(([base, suffix]) => [base, `${base}${suffix}`] as const);
const distinctPair = fc.oneof(
  extendingPair,
  extendingPair.map(([a, b]) => [b, a] as const),
  fc.tuple(uid, uid).filter(([a, b]) => a !== b),
);
/** `topics` claim entries: exact topics and prefix grants, `user:` ones included. */
const claimEntry = fc.oneof(
  fc.string({ unit: idChar, minLength: 0, maxLength: 14 }),
  uid.map((u) => `user:${u}`),
  fc.string({ unit: idChar, minLength: 0, maxLength: 14 }).map((p) => `${p}*`),
  fc.string({ unit: idChar, minLength: 0, maxLength: 10 }).map((p) => `user:${p}*`),
  fc.constantFrom('*', 'user*', 'user:*', 'u*'),
);

const claimsOf = (userId: string, topics?: string[]) => ({
  sub: 'device',
  uid: userId,
  exp: 0,
  ...(topics ? { topics } : {}),
});

describe('default topic policy (property-based)', () => {
  it('generates valid identifiers only', () => {
    fc.assert(
      fc.property(uid, (u) => Identifier.safeParse(u).success && Identifier.safeParse(`user:${u}`).success),
    );
  });

  it('lets every user subscribe to its own user topic', () => {
    fc.assert(fc.property(uid, (u) => defaultTopicAuthorizer(claimsOf(u), `user:${u}`)));
  });

  it('never lets a user reach another user topic unless its token names that very topic', () => {
    fc.assert(
      fc.property(
        distinctPair,
        fc.option(fc.array(claimEntry, { maxLength: 6 })),
        ([mine, theirs], topics) => {
          const target = `user:${theirs}`;
          const named = (topics ?? []).includes(target);
          return defaultTopicAuthorizer(claimsOf(mine, topics ?? undefined), target) === named;
        },
      ),
      { numRuns: 5_000 },
    );
  });

  it('refuses the reported case: alice may not subscribe to the topic of alice.smith', () => {
    assert.equal(defaultTopicAuthorizer(claimsOf('alice'), 'user:alice.smith'), false);
    assert.equal(defaultTopicAuthorizer(claimsOf('alice'), 'user:alice:x'), false);
    assert.equal(defaultTopicAuthorizer(claimsOf('alice', ['user:alice*']), 'user:alice.smith'), false);
    assert.equal(defaultTopicAuthorizer(claimsOf('alice', ['*']), 'user:bob'), false);
    // A prefix grant still works outside the user namespace, and an exact grant anywhere.
    assert.equal(defaultTopicAuthorizer(claimsOf('alice', ['*']), 'news'), true);
    assert.equal(defaultTopicAuthorizer(claimsOf('alice', ['user:family-1']), 'user:family-1'), true);
  });
});
