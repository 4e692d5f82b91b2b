/* initialize and set_guardian_set (admin), plus loading the singleton config and vault. */
#include "worker.h"

static const char CONFIG_SEED[] = "config";
static const char VAULT_SEED[] = "vault";
static const char GUARDIAN_SET_SEED[] = "guardian_set";

/* initialize data: tag, peer_chain u16, peer_emitter[32], unbonding_delay u64,
 * guardian_set_ttl u64, min_stake u64, consistency u8, set_index u32, count u8, keys[20*count] */
#define INIT_FIXED_LEN 65
/* set_guardian_set data: tag, set_index u32, count u8, keys[20*count] */
#define SET_FIXED_LEN 6

u64 load_config(const Context *ctx, Account *account, bool writable, Config **out) {
  TRY(require_program_account(ctx, account, KIND_CONFIG, sizeof(Config)));
  if (writable) {
    TRY(require_writable(account));
  }
  Config *config = (Config *)account_data(account);
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)CONFIG_SEED, sizeof(CONFIG_SEED) - 1);
  TRY(require_pda(ctx, account, &seeds, config->bump));
  *out = config;
  return 0;
}

u64 load_vault(const Context *ctx, Account *account, const Config *config) {
  TRY(require_program_account(ctx, account, KIND_VAULT, sizeof(Vault)));
  TRY(require_writable(account));
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)VAULT_SEED, sizeof(VAULT_SEED) - 1);
  return require_pda(ctx, account, &seeds, config->vault_bump);
}

static u64 read_guardian_keys(const u8 *data, u64 data_len, u64 fixed_len, u8 *count) {
  *count = data[fixed_len - 1];
  if (*count == 0 || *count > MAX_GUARDIANS) {
    return ERR_INVALID_GUARDIAN_SET;
  }
  return data_len == fixed_len + 20UL * *count ? 0 : ERR_INVALID_INSTRUCTION;
}

/* Creates the guardian set account for `index` with `count` keys from `keys`. */
static u64 create_guardian_set(const Context *ctx, Account *payer, Account *account, u32 index,
                               const u8 *keys_and_count) {
  u8 index_be[4];
  u8 count = keys_and_count[0];
  write_be32(index_be, index);
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)GUARDIAN_SET_SEED, sizeof(GUARDIAN_SET_SEED) - 1);
  seeds_push(&seeds, index_be, 4);
  TRY(find_pda(ctx, account, &seeds));
  TRY(create_pda(ctx, payer, account, &seeds, sizeof(GuardianSet)));
  GuardianSet *set = (GuardianSet *)account_data(account);
  set->kind = KIND_GUARDIAN_SET;
  set->expiration_time = 0;
  set->index = index;
  set->count = count;
  set->bump = seeds.bump;
  copy(set->keys, keys_and_count + 1, 20UL * count);
  return 0;
}

u64 process_initialize(Context *ctx) {
  Account *admin, *config_account, *set_account, *vault, *system;
  TRY(account_at(ctx, 0, &admin));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &set_account));
  TRY(account_at(ctx, 3, &vault));
  TRY(account_at(ctx, 4, &system));
  TRY(require_signer(admin));
  TRY(require_system_program(system));
  const u8 *data = ctx->data;
  if (ctx->data_len < INIT_FIXED_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  u8 count;
  TRY(read_guardian_keys(data, ctx->data_len, INIT_FIXED_LEN, &count));
  if (equal(account_owner(config_account), ctx->program_id, 32)) {
    return ERR_ALREADY_INITIALIZED;
  }

  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)CONFIG_SEED, sizeof(CONFIG_SEED) - 1);
  TRY(find_pda(ctx, config_account, &seeds));
  TRY(create_pda(ctx, admin, config_account, &seeds, sizeof(Config)));
  Config *config = (Config *)account_data(config_account);
  config->kind = KIND_CONFIG;
  copy(config->admin, account_key(admin), 32);
  config->peer_chain = (u16)(data[1] | (data[2] << 8));
  copy(config->peer_emitter, data + 3, 32);
  config->unbonding_delay = read_le64(data + 35);
  config->guardian_set_ttl = read_le64(data + 43);
  config->min_stake = read_le64(data + 51);
  config->consistency_level = data[59];
  config->guardian_set_index = read_le32(data + 60);
  config->next_sequence = 0;
  config->slashed_lamports = 0;
  config->bump = seeds.bump;

  Seeds vault_seeds;
  seeds_init(&vault_seeds);
  seeds_push(&vault_seeds, (const u8 *)VAULT_SEED, sizeof(VAULT_SEED) - 1);
  TRY(find_pda(ctx, vault, &vault_seeds));
  TRY(create_pda(ctx, admin, vault, &vault_seeds, sizeof(Vault)));
  ((Vault *)account_data(vault))->kind = KIND_VAULT;
  config->vault_bump = vault_seeds.bump;

  return create_guardian_set(ctx, admin, set_account, config->guardian_set_index,
                             data + INIT_FIXED_LEN - 1);
}

u64 process_set_guardian_set(Context *ctx) {
  Account *admin, *config_account, *current_account, *next_account, *system;
  TRY(account_at(ctx, 0, &admin));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &current_account));
  TRY(account_at(ctx, 3, &next_account));
  TRY(account_at(ctx, 4, &system));
  TRY(require_signer(admin));
  TRY(require_system_program(system));
  Config *config;
  TRY(load_config(ctx, config_account, true, &config));
  if (!equal(config->admin, account_key(admin), 32)) {
    return ERR_NOT_ADMIN;
  }
  if (ctx->data_len < SET_FIXED_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  u8 count;
  TRY(read_guardian_keys(ctx->data, ctx->data_len, SET_FIXED_LEN, &count));
  u32 index = read_le32(ctx->data + 1);
  if (index != config->guardian_set_index + 1) {
    return ERR_INVALID_GUARDIAN_SET;
  }
  TRY(require_program_account(ctx, current_account, KIND_GUARDIAN_SET, sizeof(GuardianSet)));
  TRY(require_writable(current_account));
  GuardianSet *current = (GuardianSet *)account_data(current_account);
  if (current->index != config->guardian_set_index) {
    return ERR_GUARDIAN_SET_MISMATCH;
  }
  TRY(create_guardian_set(ctx, admin, next_account, index, ctx->data + SET_FIXED_LEN - 1));
  current->expiration_time = now_unix() + config->guardian_set_ttl;
  config->guardian_set_index = index;
  return 0;
}
