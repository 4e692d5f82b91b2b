/*
 * 256-bit integers mod Q, the order of secp256k1, in eight u32 limbs (little-endian limb order):
 * the target has no 128-bit arithmetic, and a u32 x u32 product with two u32 carries fits a u64.
 *
 * Reduction uses 2^256 = C (mod Q) with C = 2^256 - Q (129 bits): x = hi * 2^256 + lo is
 * replaced by hi * C + lo until it fits 256 bits, then Q is subtracted while x >= Q.
 */
#include "worker.h"

#define LIMBS 8
#define WIDE 17 /* a 512-bit product plus a limb of carry room */

static const u32 Q_LIMBS[LIMBS] = {0xd0364141, 0xbfd25e8c, 0xaf48a03b, 0xbaaedce6,
                                   0xfffffffe, 0xffffffff, 0xffffffff, 0xffffffff};
static const u32 C_LIMBS[5] = {0x2fc9bebf, 0x402da173, 0x50b75fc4, 0x45512319, 0x1};

void u256_from_be(U256 *out, const u8 *be) {
  for (u64 i = 0; i < LIMBS; i++) {
    out->limb[i] = read_be32(be + 4 * (LIMBS - 1 - i));
  }
}

void u256_to_be(u8 *be, const U256 *x) {
  for (u64 i = 0; i < LIMBS; i++) {
    write_be32(be + 4 * (LIMBS - 1 - i), x->limb[i]);
  }
}

bool u256_is_zero(const U256 *x) {
  u32 any = 0;
  for (u64 i = 0; i < LIMBS; i++) {
    any |= x->limb[i];
  }
  return any == 0;
}

/* Whether x >= Q. */
static bool at_least_q(const u32 *x) {
  for (u64 i = LIMBS; i-- > 0;) {
    if (x[i] != Q_LIMBS[i]) {
      return x[i] > Q_LIMBS[i];
    }
  }
  return true;
}

bool u256_below_q(const U256 *x) { return !at_least_q(x->limb); }

/* out = minuend - x over eight limbs (the caller ensures no borrow out). */
static void sub_limbs(u32 *out, const u32 *minuend, const u32 *x) {
  u64 borrow = 0;
  for (u64 i = 0; i < LIMBS; i++) {
    u64 d = (u64)minuend[i] - x[i] - borrow;
    out[i] = (u32)d;
    borrow = (d >> 32) & 1;
  }
}

void u256_q_minus(U256 *out, const U256 *x) { sub_limbs(out->limb, Q_LIMBS, x->limb); }

/* x (len limbs) becomes lo + hi * C; returns the limbs now in use (at least LIMBS). */
static u64 fold(u32 *x, u64 len) {
  u32 t[WIDE];
  zero(t, sizeof(t));
  copy(t, x, LIMBS * sizeof(u32));
  for (u64 i = 0; i + LIMBS < len; i++) {
    u64 carry = 0;
    u64 k = i;
    for (u64 j = 0; j < 5; j++, k++) {
      u64 v = (u64)x[LIMBS + i] * C_LIMBS[j] + t[k] + carry;
      t[k] = (u32)v;
      carry = v >> 32;
    }
    for (; carry != 0 && k < WIDE; k++) {
      u64 v = (u64)t[k] + carry;
      t[k] = (u32)v;
      carry = v >> 32;
    }
  }
  copy(x, t, sizeof(t));
  len = WIDE;
  while (len > LIMBS && x[len - 1] == 0) {
    len--;
  }
  return len;
}

void u256_mulmod_q(U256 *out, const U256 *a, const U256 *b) {
  u32 x[WIDE];
  zero(x, sizeof(x));
  for (u64 i = 0; i < LIMBS; i++) {
    u64 carry = 0;
    for (u64 j = 0; j < LIMBS; j++) {
      u64 v = (u64)a->limb[i] * b->limb[j] + x[i + j] + carry;
      x[i + j] = (u32)v;
      carry = v >> 32;
    }
    x[i + LIMBS] = (u32)carry;
  }
  u64 len = 2 * LIMBS;
  while (len > LIMBS) {
    len = fold(x, len);
  }
  while (at_least_q(x)) {
    sub_limbs(x, x, Q_LIMBS);
  }
  copy(out->limb, x, LIMBS * sizeof(u32));
}
