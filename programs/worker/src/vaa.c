/*
 * Wormhole v1 VAA verification against the stored guardian set: version, guardian set index,
 * expiry, quorum floor(2n/3)+1, strictly ascending guardian indices, low-s signatures recovered
 * with sol_secp256k1_recover, and the registered peer emitter.
 */
#include "worker.h"

static const char GUARDIAN_SET_SEED[] = "guardian_set";

/* secp256k1 group order divided by two: signatures with a larger s are malleable copies. */
static const u8 HALF_ORDER[32] = {
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};

#define VAA_HEADER_LEN 6
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

static u64 check_signature(const u8 *digest, const u8 *signature, const u8 *expected_address) {
  u8 public_key[64];
  u8 hash[32];
  u8 v = signature[65];
  if (!is_low_s(signature + 33)) {
    return ERR_HIGH_S;
  }
  if (v > 1) {
    return ERR_INVALID_SIGNATURE;
  }
  if (sol_secp256k1_recover(digest, v, signature + 1, public_key)) {
    return ERR_INVALID_SIGNATURE;
  }
  Bytes key = {public_key, 64};
  sol_keccak256(&key, 1, hash);
  return equal(hash + 12, expected_address, 20) ? 0 : ERR_INVALID_SIGNATURE;
}

static u64 load_guardian_set(const Context *ctx, Account *account, u32 index, GuardianSet **out) {
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

u64 verify_vaa(const Context *ctx, const Config *config, Account *guardian_set_account,
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

  const u8 *body = vaa + body_offset;
  u8 body_hash[32];
  Bytes slice = {body, vaa_len - body_offset};
  sol_keccak256(&slice, 1, body_hash);
  slice.addr = body_hash;
  slice.len = 32;
  sol_keccak256(&slice, 1, out->digest);

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
  out->emitter_chain = read_be16(body + 8);
  out->emitter = body + 10;
  out->sequence = read_be64(body + 42);
  out->payload = body + BODY_HEADER_LEN;
  out->payload_len = vaa_len - body_offset - BODY_HEADER_LEN;
  if (out->emitter_chain != config->peer_chain || !equal(out->emitter, config->peer_emitter, 32)) {
    return ERR_WRONG_EMITTER;
  }
  return 0;
}
