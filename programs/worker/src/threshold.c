/*
 * Threshold keys for version-2 VAAs: the PDAs ["threshold_key", index u32 BE] and
 * append_threshold_key, which appends the next key from a governance VAA held in a buffer.
 *
 * append_threshold_key accounts: payer (signer, writable; the buffer's authority), config, the
 * current guardian set (it signed the VAA), the new key's PDA (writable), system program, buffer
 * (writable; closed to the payer); from index 1 on also the previous key (writable) and the
 * guardian set that key stands for. Data: the tag only.
 *
 * The governance VAA comes from chain 1, emitter 0x00..04, and carries (big-endian):
 * module "TSS" (32, right-aligned) | action 1 | chain u16 (0 or 1) | index u32 |
 * compressed key 33 | expiry delay u32. The previous key expires at now + min(delay,
 * guardian_set_ttl), and no later than its guardian set if that set was already replaced, so a
 * key never outlives its guardian set.
 */
#include "worker.h"

static const char THRESHOLD_KEY_SEED[] = "threshold_key";

#define GOVERNANCE_CHAIN 1
#define APPEND_KEY_LEN 76
#define ACTION_APPEND_KEY 1

/* The order of secp256k1, big-endian. */
static const u8 ORDER[32] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};

static void key_seeds(Seeds *seeds, u8 *index_be, u32 index) {
  write_be32(index_be, index);
  seeds_init(seeds);
  seeds_push(seeds, (const u8 *)THRESHOLD_KEY_SEED, sizeof(THRESHOLD_KEY_SEED) - 1);
  seeds_push(seeds, index_be, 4);
}

u64 load_threshold_key(const Context *ctx, Account *account, u32 index, ThresholdKey **out) {
  u8 index_be[4];
  if (!equal(account_owner(account), ctx->program_id, 32)) {
    return ERR_UNKNOWN_THRESHOLD_KEY;
  }
  TRY(require_program_account(ctx, account, KIND_THRESHOLD_KEY, sizeof(ThresholdKey)));
  ThresholdKey *key = (ThresholdKey *)account_data(account);
  if (key->index != index) {
    return ERR_UNKNOWN_THRESHOLD_KEY;
  }
  Seeds seeds;
  key_seeds(&seeds, index_be, index);
  TRY(require_pda(ctx, account, &seeds, key->bump));
  *out = key;
  return 0;
}

/* Whether the 32 big-endian bytes are in 1..Q-1. */
static bool is_scalar(const u8 *x) {
  static const u8 ZERO[32] = {0};
  if (equal(x, ZERO, 32)) {
    return false;
  }
  for (u64 i = 0; i < 32; i++) {
    if (x[i] != ORDER[i]) {
      return x[i] < ORDER[i];
    }
  }
  return false;
}

/* Checks the payload; on success `*prefix` is the key's 02/03 byte. */
static u64 check_payload(const u8 *p, u64 len, u32 *index, u32 *delay) {
  static const u8 MODULE[32] = {[29] = 'T', [30] = 'S', [31] = 'S'};
  if (len != APPEND_KEY_LEN || !equal(p, MODULE, 32) || p[32] != ACTION_APPEND_KEY) {
    return ERR_GOVERNANCE_PAYLOAD;
  }
  u16 chain = read_be16(p + 33);
  if (chain != 0 && chain != SOLANA_CHAIN) {
    return ERR_GOVERNANCE_PAYLOAD;
  }
  *index = read_be32(p + 35);
  if ((p[39] != 2 && p[39] != 3) || !is_scalar(p + 40)) {
    return ERR_GOVERNANCE_PAYLOAD;
  }
  /* A curve point has this x iff some key recovers from it as a signature's r. */
  static const u8 ONE[32] = {[31] = 1};
  u8 rs[64], address[20];
  copy(rs, p + 40, 32);
  copy(rs + 32, ONE, 32);
  if (!recover_address(ONE, p[39] - 2, rs, address)) {
    return ERR_GOVERNANCE_PAYLOAD;
  }
  *delay = read_be32(p + 72);
  return 0;
}

/* Gives the previous (newest) key its expiration time. */
static u64 expire_previous(const Context *ctx, const Config *config, u32 index, u32 delay) {
  Account *previous_account, *set_account;
  TRY(account_at(ctx, 6, &previous_account));
  TRY(account_at(ctx, 7, &set_account));
  TRY(require_writable(previous_account));
  ThresholdKey *previous;
  TRY(load_threshold_key(ctx, previous_account, index - 1, &previous));
  if (previous->expiration_time != 0) {
    return ERR_WRONG_ACCOUNT; /* only the newest key is superseded */
  }
  GuardianSet *set;
  TRY(load_guardian_set(ctx, set_account, previous->guardian_set_index, &set));
  u64 grace = delay < config->guardian_set_ttl ? delay : config->guardian_set_ttl;
  u64 expires = now_unix() + grace;
  if (set->index != config->guardian_set_index && set->expiration_time < expires) {
    expires = set->expiration_time;
  }
  previous->expiration_time = expires == 0 ? 1 : expires;
  return 0;
}

u64 process_append_threshold_key(Context *ctx) {
  Account *payer, *config_account, *set_account, *key_account, *system, *buffer;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &set_account));
  TRY(account_at(ctx, 3, &key_account));
  TRY(account_at(ctx, 4, &system));
  TRY(account_at(ctx, 5, &buffer));
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_system_program(system));
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  Config *config;
  TRY(load_config(ctx, config_account, false, &config));
  Bytes vaa_bytes;
  TRY(load_vaa_buffer(ctx, buffer, payer, &vaa_bytes));
  VerifiedVaa vaa;
  TRY(verify_guardian_vaa(ctx, set_account, &vaa_bytes, &vaa));
  static const u8 GOVERNANCE_EMITTER[32] = {[31] = 4};
  if (vaa.guardian_set_index != config->guardian_set_index ||
      vaa.emitter_chain != GOVERNANCE_CHAIN || !equal(vaa.emitter, GOVERNANCE_EMITTER, 32)) {
    return ERR_NOT_GOVERNANCE;
  }
  u32 index, delay;
  TRY(check_payload(vaa.payload, vaa.payload_len, &index, &delay));
  const u8 *public_key = vaa.payload + 39;

  if (equal(account_owner(key_account), ctx->program_id, 32)) {
    return ERR_THRESHOLD_KEY_EXISTS;
  }
  if (index > 0) {
    TRY(expire_previous(ctx, config, index, delay));
  }
  u8 index_be[4];
  Seeds seeds;
  key_seeds(&seeds, index_be, index);
  TRY(find_pda(ctx, key_account, &seeds));
  TRY(create_pda(ctx, payer, key_account, &seeds, sizeof(ThresholdKey)));
  ThresholdKey *key = (ThresholdKey *)account_data(key_account);
  key->kind = KIND_THRESHOLD_KEY;
  copy(key->px, public_key + 1, 32);
  key->expiration_time = 0;
  key->index = index;
  key->guardian_set_index = vaa.guardian_set_index;
  key->parity = public_key[0] - 2;
  key->bump = seeds.bump;
  return close_account(buffer, payer);
}
