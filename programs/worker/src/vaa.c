/*
 * VAA verification. Version 1 against the stored guardian set: guardian set index, expiry, quorum
 * floor(2n/3)+1, strictly ascending guardian indices, low-s signatures recovered with
 * sol_secp256k1_recover. Version 2 against a stored threshold key, with one recovery
 * (docs/protocol.md, section 2a). Then the registered peer emitter.
 */
#include "worker.h"

static const char GUARDIAN_SET_SEED[] = "guardian_set";

/* secp256k1 group order divided by two: signatures with a larger s are malleable copies. */
static const u8 HALF_ORDER[32] = {
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};

#define VAA_HEADER_LEN 6
#define V2_HEADER_LEN 57
#define SIGNATURE_LEN 66
#define BODY_HEADER_LEN 51

static bool is_low_s(const u8 *s) {
  for (u64 i = 0; i < 32; i++) {
    if (s[i] != HALF_ORDER[i]) {
      return s[i] < HALF_ORDER[i];
    }
  }
  return true;
}

__attribute__((noinline)) bool recover_address(const u8 *hash, u8 v, const u8 *rs, u8 *address) {
  u8 public_key[64];
  u8 key_hash[32];
  if (sol_secp256k1_recover(hash, v, rs, public_key)) {
    return false;
  }
  Bytes key = {public_key, 64};
  sol_keccak256(&key, 1, key_hash);
  copy(address, key_hash + 12, 20);
  return true;
}

static u64 check_signature(const u8 *digest, const u8 *signature, const u8 *expected_address) {
  u8 address[20];
  u8 v = signature[65];
  if (!is_low_s(signature + 33)) {
    return ERR_HIGH_S;
  }
  if (v > 1) {
    return ERR_INVALID_SIGNATURE;
  }
  if (!recover_address(digest, v, signature + 1, address)) {
    return ERR_INVALID_SIGNATURE;
  }
  return equal(address, expected_address, 20) ? 0 : ERR_INVALID_SIGNATURE;
}

u64 load_guardian_set(const Context *ctx, Account *account, u32 index, GuardianSet **out) {
  u8 index_be[4];
  if (account_data_len(account) == 0 && !equal(account_owner(account), ctx->program_id, 32)) {
    return ERR_UNKNOWN_GUARDIAN_SET; /* no set was ever created at this address */
  }
  TRY(require_program_account(ctx, account, KIND_GUARDIAN_SET, sizeof(GuardianSet)));
  GuardianSet *set = (GuardianSet *)account_data(account);
  if (set->index != index) {
    return ERR_GUARDIAN_SET_MISMATCH;
  }
  write_be32(index_be, index);
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)GUARDIAN_SET_SEED, sizeof(GUARDIAN_SET_SEED) - 1);
  seeds_push(&seeds, index_be, 4);
  TRY(require_pda(ctx, account, &seeds, set->bump));
  if (set->count == 0 || set->count > MAX_GUARDIANS) {
    return ERR_INVALID_GUARDIAN_SET;
  }
  *out = set;
  return 0;
}

/* The body's fields and digest keccak256(keccak256(body)). */
static void read_body(const u8 *body, u64 body_len, VerifiedVaa *out) {
  u8 body_hash[32];
  Bytes slice = {body, body_len};
  sol_keccak256(&slice, 1, body_hash);
  slice.addr = body_hash;
  slice.len = 32;
  sol_keccak256(&slice, 1, out->digest);
  out->emitter_chain = read_be16(body + 8);
  out->emitter = body + 10;
  out->sequence = read_be64(body + 42);
  out->payload = body + BODY_HEADER_LEN;
  out->payload_len = body_len - BODY_HEADER_LEN;
}

__attribute__((noinline)) u64 verify_guardian_vaa(const Context *ctx, Account *guardian_set_account,
                        const Bytes *vaa_bytes, VerifiedVaa *out) {
  const u8 *vaa = vaa_bytes->addr;
  u64 vaa_len = vaa_bytes->len;
  if (vaa_len < VAA_HEADER_LEN || vaa[0] != 1) {
    return ERR_VAA_MALFORMED;
  }
  u32 set_index = read_be32(vaa + 1);
  u64 signature_count = vaa[5];
  u64 body_offset = VAA_HEADER_LEN + SIGNATURE_LEN * signature_count;
  if (vaa_len < body_offset + BODY_HEADER_LEN) {
    return ERR_VAA_MALFORMED;
  }
  GuardianSet *set;
  TRY(load_guardian_set(ctx, guardian_set_account, set_index, &set));
  if (set->expiration_time != 0 && now_unix() > set->expiration_time) {
    return ERR_GUARDIAN_SET_EXPIRED;
  }
  if (signature_count < (u64)set->count * 2 / 3 + 1) {
    return ERR_NO_QUORUM;
  }

  read_body(vaa + body_offset, vaa_len - body_offset, out);
  for (u64 i = 0; i < signature_count; i++) {
    const u8 *signature = vaa + VAA_HEADER_LEN + SIGNATURE_LEN * i;
    u8 guardian = signature[0];
    if (i > 0 && guardian <= signature[-SIGNATURE_LEN]) {
      return ERR_SIGNATURES_NOT_ASCENDING;
    }
    if (guardian >= set->count) {
      return ERR_GUARDIAN_INDEX_OUT_OF_RANGE;
    }
    TRY(check_signature(out->digest, signature, set->keys[guardian]));
  }

  out->guardian_set_index = set_index;
  return 0;
}

/*
 * Version 2: e = keccak256(px || parity || digest || r); valid when s < Q, r != 0 and
 * ecrecover(Q - px*s, parity, px, px*e) (mod Q) recovers the address r, i.e. r = address(s*G + e*P).
 * The recovery's s is brought to the low half (n - s with the other parity recovers the same
 * point), which the syscall may require.
 */
__attribute__((noinline)) static u64 verify_threshold_vaa(const Context *ctx, const Config *config, Account *key_account,
                                const Bytes *vaa_bytes, VerifiedVaa *out) {
  const u8 *vaa = vaa_bytes->addr;
  u64 vaa_len = vaa_bytes->len;
  if (vaa_len < V2_HEADER_LEN + BODY_HEADER_LEN) {
    return ERR_VAA_MALFORMED;
  }
  ThresholdKey *key;
  TRY(load_threshold_key(ctx, key_account, read_be32(vaa + 1), &key));
  if (key->expiration_time != 0 && now_unix() > key->expiration_time) {
    return ERR_THRESHOLD_KEY_EXPIRED;
  }
  /* A newest key whose guardian set was replaced waits for its successor, which gives it an
   * expiration no later than its set's (append_threshold_key). */
  if (key->expiration_time == 0 && key->guardian_set_index != config->guardian_set_index) {
    return ERR_GUARDIAN_SET_EXPIRED;
  }
  const u8 *r = vaa + 5;
  U256 s, px, e, product;
  u256_from_be(&s, vaa + 25);
  static const u8 ZERO[20] = {0};
  if (!u256_below_q(&s) || equal(r, ZERO, 20)) {
    return ERR_INVALID_SIGNATURE;
  }
  read_body(vaa + V2_HEADER_LEN, vaa_len - V2_HEADER_LEN, out);
  out->guardian_set_index = key->guardian_set_index;

  u8 e_bytes[32];
  Bytes parts[4] = {{key->px, 32}, {&key->parity, 1}, {out->digest, 32}, {r, 20}};
  sol_keccak256(parts, 4, e_bytes);
  u256_from_be(&px, key->px);
  u256_from_be(&e, e_bytes);
  u8 hash[32], rs[64], address[20];
  u256_mulmod_q(&product, &px, &s);
  u256_q_minus(&product, &product);
  u256_to_be(hash, &product);
  u256_mulmod_q(&product, &px, &e);
  u8 v = key->parity;
  copy(rs, key->px, 32);
  u256_to_be(rs + 32, &product);
  if (!is_low_s(rs + 32)) {
    u256_q_minus(&product, &product);
    u256_to_be(rs + 32, &product);
    v ^= 1;
  }
  if (!recover_address(hash, v, rs, address) || !equal(address, r, 20)) {
    return ERR_INVALID_SIGNATURE;
  }
  return 0;
}

u64 verify_vaa(const Context *ctx, const Config *config, Account *key_account,
               const Bytes *vaa_bytes, VerifiedVaa *out) {
  /* Delivered against a guardian set, a VAA is verified as version 1 (which refuses any other
   * version as malformed); otherwise version 2 goes to the threshold key named. */
  bool against_set = account_data_len(key_account) >= 8 &&
                     read_le64(account_data(key_account)) == KIND_GUARDIAN_SET;
  if (!against_set && vaa_bytes->len > 0 && vaa_bytes->addr[0] == 2) {
    TRY(verify_threshold_vaa(ctx, config, key_account, vaa_bytes, out));
  } else {
    TRY(verify_guardian_vaa(ctx, key_account, vaa_bytes, out));
  }
  if (out->emitter_chain != config->peer_chain || !equal(out->emitter, config->peer_emitter, 32)) {
    return ERR_WRONG_EMITTER;
  }
  return 0;
}
