/*
 * register (stake into the vault, publish WORKER_REGISTERED), stake, begin_unstake, withdraw.
 *
 * Bonded stake backs tasks: each open task locks its stake_lock, and begin_unstake refuses to
 * take bonded stake below what is locked. Every change after registration publishes a
 * STAKE_CHANGED with the new bonded stake and the worker's next nonce, paid by the worker.
 */
#include "worker.h"

static const char WORKER_SEED[] = "worker";

/* register data: tag, stake u64 (lamports), payout[32], capabilities u32, nonce u32 */
#define REGISTER_LEN 49

static u64 transfer_lamports(Account *from, Account *to, u64 lamports) {
  u8 data[12];
  *(u32 *)data = 2; /* system Transfer */
  *(u64 *)(data + 4) = lamports;
  CpiAccountInfo infos[2] = {
      {account_key(from), account_lamports(from), account_data_len(from), account_data(from),
       account_owner(from), account_rent_epoch(from), true, true, false},
      {account_key(to), account_lamports(to), account_data_len(to), account_data(to),
       account_owner(to), account_rent_epoch(to), false, true, false},
  };
  CpiAccountMeta metas[2] = {{account_key(from), true, true}, {account_key(to), true, false}};
  static const u8 system_program[32] = {0};
  CpiInstruction ix = {system_program, metas, 2, data, 12};
  return sol_invoke_signed_c(&ix, infos, 2, NULL, 0) ? ERR_ARITHMETIC : 0;
}

u64 process_register(Context *ctx) {
  Account *worker, *config_account, *worker_account, *vault, *message, *system;
  TRY(account_at(ctx, 0, &worker));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &worker_account));
  TRY(account_at(ctx, 3, &vault));
  TRY(account_at(ctx, 4, &message));
  TRY(account_at(ctx, 5, &system));
  TRY(require_signer(worker));
  TRY(require_writable(worker));
  TRY(require_system_program(system));
  if (ctx->data_len != REGISTER_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  Config *config;
  TRY(load_config(ctx, config_account, true, &config));
  TRY(load_vault(ctx, vault, config));
  u64 stake = read_le64(ctx->data + 1);
  if (stake < config->min_stake || stake == 0) {
    return ERR_STAKE_TOO_LOW;
  }
  if (stake % LAMPORTS_PER_STAKE_UNIT != 0) {
    return ERR_INVALID_ARGUMENT;
  }
  if (equal(account_owner(worker_account), ctx->program_id, 32)) {
    return ERR_ALREADY_REGISTERED;
  }
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)WORKER_SEED, sizeof(WORKER_SEED) - 1);
  seeds_push(&seeds, account_key(worker), 32);
  TRY(find_pda(ctx, worker_account, &seeds));
  TRY(create_pda(ctx, worker, worker_account, &seeds, sizeof(Worker)));
  TRY(transfer_lamports(worker, vault, stake));

  Worker *record = (Worker *)account_data(worker_account);
  record->kind = KIND_WORKER;
  copy(record->key, account_key(worker), 32);
  copy(record->payout, ctx->data + 9, 32);
  record->stake = stake;
  record->unbonding = 0;
  record->unbonding_at = 0;
  record->locked = 0;
  record->nonce = 0;
  record->capabilities = read_le32(ctx->data + 41);
  record->assigned = 0;
  record->bump = seeds.bump;

  u8 payload[WORKER_REGISTERED_LEN];
  payload[0] = PAYLOAD_WORKER_REGISTERED;
  payload[1] = PROTOCOL_VERSION;
  write_be16(payload + 2, config->peer_chain);
  copy(payload + 4, config->peer_emitter, 32);
  write_be64(payload + 36, 0);
  copy(payload + 44, account_key(worker), 32);
  write_be64(payload + 76, stake / LAMPORTS_PER_STAKE_UNIT);
  copy(payload + 84, record->payout, 32);
  write_be32(payload + 116, record->capabilities);
  Outgoing out = {config, worker, message, payload, WORKER_REGISTERED_LEN,
                  read_le32(ctx->data + 45)};
  return publish_message(ctx, &out);
}

/* Loads the worker account of `signer`: owned by the program and recording that key. */
u64 load_own_worker(const Context *ctx, Account *signer, Account *account, Worker **out) {
  TRY(require_signer(signer));
  TRY(require_writable(signer));
  TRY(require_program_account(ctx, account, KIND_WORKER, sizeof(Worker)));
  TRY(require_writable(account));
  Worker *record = (Worker *)account_data(account);
  if (!equal(record->key, account_key(signer), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  *out = record;
  return 0;
}

/* Publishes the worker's STAKE_CHANGED (next nonce), paid by the worker. */
u64 report_stake(const Context *ctx, const WorkerCall *call, u8 reason, const u8 *task_id) {
  Worker *record = call->record;
  record->nonce += 1;
  StakeChange change = {record->key, record->stake, record->nonce, reason, task_id};
  return publish_stake_changed(ctx, call->config, call->signer, call->message, &change);
}

/* Accounts 0 worker (signer), 1 config, 2 worker record, then `message_at` the message PDA and
 * the system program after it. */
u64 load_worker_call(Context *ctx, u64 message_at, WorkerCall *call) {
  Account *config_account, *worker_account, *system;
  TRY(account_at(ctx, 0, &call->signer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &worker_account));
  TRY(account_at(ctx, message_at, &call->message));
  TRY(account_at(ctx, message_at + 1, &system));
  TRY(require_system_program(system));
  TRY(load_config(ctx, config_account, true, &call->config));
  return load_own_worker(ctx, call->signer, worker_account, &call->record);
}

/* An amount of lamports from instruction data: nonzero and a whole number of 8-decimal units. */
static u64 read_amount(const Context *ctx, u64 *amount) {
  if (ctx->data_len != 9) {
    return ERR_INVALID_INSTRUCTION;
  }
  *amount = read_le64(ctx->data + 1);
  if (*amount == 0 || *amount % LAMPORTS_PER_STAKE_UNIT != 0) {
    return ERR_INVALID_ARGUMENT;
  }
  return 0;
}

/* stake: 0 worker, 1 config, 2 worker record, 3 vault, 4 message, 5 system; data tag, amount. */
u64 process_stake(Context *ctx) {
  WorkerCall call;
  Account *vault;
  u64 amount;
  TRY(read_amount(ctx, &amount));
  TRY(load_worker_call(ctx, 4, &call));
  TRY(account_at(ctx, 3, &vault));
  TRY(load_vault(ctx, vault, call.config));
  if (call.record->stake + amount < amount) {
    return ERR_ARITHMETIC;
  }
  TRY(transfer_lamports(call.signer, vault, amount));
  call.record->stake += amount;
  return report_stake(ctx, &call, STAKE_STAKED, NULL);
}

/* begin_unstake: 0 worker, 1 config, 2 worker record, 3 message, 4 system; data tag, amount.
 * Moves `amount` of bonded stake to unbonding (restarting the delay for all of it). */
u64 process_begin_unstake(Context *ctx) {
  WorkerCall call;
  u64 amount;
  TRY(read_amount(ctx, &amount));
  TRY(load_worker_call(ctx, 3, &call));
  Worker *record = call.record;
  if (amount > record->stake) {
    sol_log_64_(record->stake, amount, record->locked, 0, 0);
    return ERR_STAKE_TOO_LOW;
  }
  if (record->stake - amount < record->locked) {
    sol_log_("unbond refused: staked, amount, locked", 38);
    sol_log_64_(record->stake, amount, record->locked, 0, 0);
    return ERR_STAKE_LOCKED;
  }
  record->stake -= amount;
  record->unbonding += amount;
  record->unbonding_at = now_unix() + call.config->unbonding_delay;
  return report_stake(ctx, &call, STAKE_UNBONDING, NULL);
}

/* withdraw: 0 worker, 1 config, 2 worker record, 3 vault, 4 message, 5 system.
 * Pays out what finished unbonding; the record stays (its nonce must keep counting). */
u64 process_withdraw(Context *ctx) {
  WorkerCall call;
  Account *vault;
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  TRY(load_worker_call(ctx, 4, &call));
  TRY(account_at(ctx, 3, &vault));
  TRY(load_vault(ctx, vault, call.config));
  Worker *record = call.record;
  if (record->unbonding == 0) {
    return ERR_NOT_UNBONDING;
  }
  if (now_unix() < record->unbonding_at) {
    return ERR_UNBONDING_NOT_OVER;
  }
  u64 amount = record->unbonding;
  u64 *vault_lamports = account_lamports(vault);
  if (*vault_lamports < amount) {
    return ERR_ARITHMETIC;
  }
  record->unbonding = 0;
  record->unbonding_at = 0;
  /* Publish (a system program call) before moving lamports by hand: the runtime checks at each
   * call that the accounts it can see still balance. */
  TRY(report_stake(ctx, &call, STAKE_WITHDRAWN, NULL));
  *vault_lamports -= amount;
  *account_lamports(call.signer) += amount;
  return 0;
}
