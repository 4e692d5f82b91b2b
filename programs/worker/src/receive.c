/*
 * receive_message, receive_from_buffer and apply_batch.
 *
 * Receiving verifies a VAA, checks its payload completely, and consumes its digest by creating
 * the record at PDA ["consumed", digest], which keeps the payload. Then the batch entries
 * (TASK_ASSIGNED or ROUND_SETTLED) whose accounts the transaction carries are applied; a batch
 * too large for one transaction is finished by apply_batch, entry by entry in order.
 *
 * One worker never makes a batch fail. A TASK_ASSIGNED entry whose worker is not registered, has
 * less bonded stake than min_stake, or too little unlocked stake for stake_lock is skipped and
 * reported with STAKE_CHANGED(TASK_REFUSED); an entry whose task exists is skipped. A
 * ROUND_SETTLED entry for an unknown, settled or released task is skipped. Skips are logged.
 * A slash is min(entry.slash, task.stake_lock, bonded stake); its lamports move from the vault
 * into the consumed record, which pays them out through claim_slashed.
 *
 * Data: tag, pairs u8 (entries this transaction applies), then the VAA for receive_message.
 * receive_* accounts: 0 payer (signer, writable), 1 config (writable), 2 guardian set,
 * 3 consumed PDA (writable), 4 system program, 5 vault (writable), [6 buffer (writable),
 * receive_from_buffer only], then `pairs` (worker account, task account) pairs in payload order,
 * then the message accounts for the STAKE_CHANGED messages the entries publish, for sequences
 * config.next_sequence, +1, ... (one per refused entry or nonzero slash, in entry order).
 * apply_batch accounts: 0 payer, 1 config, 2 consumed record, 3 system program, 4 vault, then
 * pairs and message accounts as above.
 */
#include "worker.h"

static const char CONSUMED_SEED[] = "consumed";
static const char TASK_SEED[] = "task";
static const char WORKER_SEED[] = "worker";

typedef struct {
  Account *payer;
  Config *config;
  Account *vault;
  Consumed *record;
  Account *consumed;
  const u8 *payload;
  u64 first_pair;   /* account index of the first (worker, task) pair */
  u64 pairs;        /* pairs this transaction carries */
  u64 next_message; /* account index of the next unused message account */
  u64 slashed_now;  /* lamports slashed by this transaction's entries */
} Batch;

static bool is_zero32(const u8 *p) {
  for (u64 i = 0; i < 32; i++) {
    if (p[i]) {
      return false;
    }
  }
  return true;
}

/* Checks a TASK_ASSIGNED or ROUND_SETTLED payload completely; returns its entry count. */
static u64 check_batch(const u8 *payload, u64 len, u64 *count) {
  u64 fixed, entry;
  if (len < PAYLOAD_HEADER_LEN) {
    return ERR_PAYLOAD_MALFORMED;
  }
  if (payload[0] == PAYLOAD_TASK_ASSIGNED) {
    fixed = TASK_FIXED_LEN;
    entry = TASK_ENTRY_LEN;
  } else if (payload[0] == PAYLOAD_ROUND_SETTLED) {
    fixed = SETTLE_FIXED_LEN;
    entry = SETTLE_ENTRY_LEN;
  } else {
    return ERR_PAYLOAD_MALFORMED;
  }
  if (len < fixed) {
    return ERR_PAYLOAD_MALFORMED;
  }
  *count = payload[fixed - 1];
  if (*count == 0 || *count > MAX_BATCH || len != fixed + entry * *count) {
    return ERR_PAYLOAD_MALFORMED;
  }
  if (payload[0] == PAYLOAD_TASK_ASSIGNED) {
    if (read_be64(payload + TASK_OFF_STAKE_LOCK) > read_be64(payload + TASK_OFF_MIN_STAKE)) {
      return ERR_PAYLOAD_MALFORMED;
    }
    return 0;
  }
  if (payload[SETTLE_OFF_MODE] > SLASH_TO_HONEST || is_zero32(payload + SETTLE_OFF_RECIPIENT)) {
    return ERR_PAYLOAD_MALFORMED;
  }
  for (u64 i = 0; i < *count; i++) {
    if (payload[fixed + entry * i + 32] > OUTCOME_SLASHED) {
      return ERR_PAYLOAD_MALFORMED;
    }
  }
  return 0;
}

static u64 load_entry_worker(const Context *ctx, Account *account, const u8 *key, Worker **out) {
  TRY(require_program_account(ctx, account, KIND_WORKER, sizeof(Worker)));
  TRY(require_writable(account));
  Worker *worker = (Worker *)account_data(account);
  if (!equal(worker->key, key, 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  *out = worker;
  return 0;
}

/* The entry's worker record, or NULL when the worker never registered (the account must then
 * be the empty PDA ["worker", key], so a relayer cannot pass another to have entries refused). */
static u64 find_entry_worker(const Context *ctx, Account *account, const u8 *key, Worker **out) {
  if (equal(account_owner(account), ctx->program_id, 32)) {
    return load_entry_worker(ctx, account, key, out);
  }
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)WORKER_SEED, sizeof(WORKER_SEED) - 1);
  seeds_push(&seeds, key, 32);
  TRY(find_pda(ctx, account, &seeds));
  *out = NULL;
  return 0;
}

/* Publishes a STAKE_CHANGED from inside the batch, into the next message account passed. */
static u64 batch_report(const Context *ctx, Batch *batch, const StakeChange *change) {
  Account *message;
  if (batch->next_message >= ctx->account_count) {
    return ERR_STALE_SEQUENCE; /* the sender expected fewer messages than the entries publish */
  }
  TRY(account_at(ctx, batch->next_message, &message));
  batch->next_message += 1;
  return publish_stake_changed(ctx, batch->config, batch->payer, message, change);
}

static void task_seeds(Seeds *seeds, const u8 *payload, const u8 *worker_key) {
  seeds_init(seeds);
  seeds_push(seeds, (const u8 *)TASK_SEED, sizeof(TASK_SEED) - 1);
  seeds_push(seeds, payload + 36, 8); /* job_id, big-endian as in the payload */
  seeds_push(seeds, payload + 44, 4); /* round */
  seeds_push(seeds, worker_key, 32);
}

static u64 refuse_task(const Context *ctx, Batch *batch, Worker *worker, const u8 *key) {
  const u8 *payload = batch->payload;
  u8 id[32];
  compute_task_id(read_be64(payload + 36), read_be32(payload + TASK_OFF_ROUND), key, id);
  StakeChange change = {key, 0, 0, STAKE_TASK_REFUSED, id};
  if (worker) {
    worker->nonce += 1;
    change.stake_lamports = worker->stake;
    change.nonce = worker->nonce;
  }
  return batch_report(ctx, batch, &change);
}

static u64 assign_task(const Context *ctx, Batch *batch, u64 entry_index, u64 pair) {
  const u8 *payload = batch->payload;
  const u8 *entry = payload + TASK_FIXED_LEN + TASK_ENTRY_LEN * entry_index;
  Account *worker_account, *task_account;
  TRY(account_at(ctx, batch->first_pair + 2 * pair, &worker_account));
  TRY(account_at(ctx, batch->first_pair + 2 * pair + 1, &task_account));
  Worker *worker;
  TRY(find_entry_worker(ctx, worker_account, entry, &worker));
  if (equal(account_owner(task_account), ctx->program_id, 32)) {
    sol_log_("task skipped: it exists", 23);
    return 0;
  }
  u64 min_stake = units_to_lamports(read_be64(payload + TASK_OFF_MIN_STAKE));
  u64 lock = units_to_lamports(read_be64(payload + TASK_OFF_STAKE_LOCK));
  if (!worker) {
    sol_log_("task refused: worker not registered", 35);
    return refuse_task(ctx, batch, worker, entry);
  }
  if (worker->stake < min_stake || worker->stake == 0) {
    sol_log_("task refused: stake below minimum", 33);
    return refuse_task(ctx, batch, worker, entry);
  }
  if (worker->locked > worker->stake || worker->stake - worker->locked < lock) {
    sol_log_("task refused: unlocked stake below stake_lock", 45);
    return refuse_task(ctx, batch, worker, entry);
  }
  Seeds seeds;
  task_seeds(&seeds, payload, entry);
  TRY(find_pda(ctx, task_account, &seeds));
  TRY(create_pda(ctx, batch->payer, task_account, &seeds, sizeof(Task)));
  Task *task = (Task *)account_data(task_account);
  task->kind = KIND_TASK;
  copy(task->worker_key, entry, 32);
  copy(task->model_hash, payload + TASK_OFF_MODEL, 32);
  copy(task->config_hash, payload + TASK_OFF_CONFIG, 32);
  task->job_id = read_be64(payload + 36);
  task->deadline = read_be64(payload + TASK_OFF_DEADLINE);
  task->stake_lock = lock;
  task->release_at = read_be64(payload + TASK_OFF_RELEASE_AT);
  task->round = read_be32(payload + TASK_OFF_ROUND);
  task->shard = read_be32(entry + 32);
  task->bump = seeds.bump;
  worker->locked += lock;
  worker->assigned += 1;
  return 0;
}

static u64 slash(const Context *ctx, Batch *batch, Worker *worker, Task *task, u64 units) {
  u64 amount = units_to_lamports(units);
  if (amount > task->stake_lock) {
    amount = task->stake_lock;
  }
  if (amount > worker->stake) {
    amount = worker->stake;
  }
  if (amount == 0) {
    return 0;
  }
  worker->stake -= amount;
  batch->slashed_now += amount; /* moved out of the vault once the entries are applied */
  batch->record->slashed += amount;
  batch->config->slashed_lamports += amount;
  worker->nonce += 1;
  StakeChange change = {worker->key, worker->stake, worker->nonce, STAKE_SLASHED, NULL};
  return batch_report(ctx, batch, &change);
}

static u64 settle_task(const Context *ctx, Batch *batch, u64 entry_index, u64 pair) {
  const u8 *payload = batch->payload;
  const u8 *entry = payload + SETTLE_FIXED_LEN + SETTLE_ENTRY_LEN * entry_index;
  Account *worker_account, *task_account;
  TRY(account_at(ctx, batch->first_pair + 2 * pair, &worker_account));
  TRY(account_at(ctx, batch->first_pair + 2 * pair + 1, &task_account));
  Seeds seeds;
  task_seeds(&seeds, payload, entry);
  TRY(find_pda(ctx, task_account, &seeds)); /* an unknown task is skipped only at its own PDA */
  if (!equal(account_owner(task_account), ctx->program_id, 32)) {
    sol_log_("settlement skipped: unknown task", 32);
    return 0;
  }
  TRY(require_kind(task_account, KIND_TASK, sizeof(Task)));
  TRY(require_writable(task_account));
  Task *task = (Task *)account_data(task_account);
  if (task->settled) {
    sol_log_("settlement skipped: task already settled", 40);
    return 0;
  }
  if (task->released) {
    sol_log_("settlement skipped: task released", 33);
    return 0;
  }
  Worker *worker;
  TRY(load_entry_worker(ctx, worker_account, entry, &worker));
  u8 outcome = entry[32];
  task->settled = 1;
  task->outcome = outcome;
  if (worker->assigned > 0) {
    worker->assigned -= 1;
  }
  worker->locked = worker->locked > task->stake_lock ? worker->locked - task->stake_lock : 0;
  if (outcome == OUTCOME_ACCEPTED) {
    batch->record->honest_mask |= 1U << entry_index;
  } else if (outcome == OUTCOME_SLASHED) {
    return slash(ctx, batch, worker, task, read_be64(entry + 33));
  }
  return 0;
}

/* Applies the next entries of the batch in `record`, one per (worker, task) account pair. */
static u64 apply_entries(const Context *ctx, Batch *batch) {
  u64 count;
  Consumed *record = batch->record;
  batch->payload = (const u8 *)record + sizeof(Consumed);
  TRY(check_batch(batch->payload, record->payload_len, &count));
  if (batch->first_pair + 2 * batch->pairs > ctx->account_count) {
    return ERR_MISSING_ACCOUNTS;
  }
  u64 pairs = batch->pairs;
  if (pairs > count - record->applied) {
    pairs = count - record->applied;
  }
  batch->next_message = batch->first_pair + 2 * batch->pairs;
  for (u64 pair = 0; pair < pairs; pair++) {
    u64 entry = record->applied + pair;
    if (batch->payload[0] == PAYLOAD_TASK_ASSIGNED) {
      TRY(assign_task(ctx, batch, entry, pair));
    } else {
      TRY(settle_task(ctx, batch, entry, pair));
    }
  }
  record->applied += (u16)pairs;
  /* Lamports move by hand only after the entries' system program calls (message and task
   * accounts): the runtime checks at each call that the accounts it can see balance. */
  u64 *vault = account_lamports(batch->vault);
  u64 *pool = account_lamports(batch->consumed);
  if (*vault < batch->slashed_now || *pool + batch->slashed_now < *pool) {
    return ERR_ARITHMETIC;
  }
  *vault -= batch->slashed_now;
  *pool += batch->slashed_now;
  return 0;
}

static void consumed_seeds(Seeds *seeds, const u8 *digest) {
  seeds_init(seeds);
  seeds_push(seeds, (const u8 *)CONSUMED_SEED, sizeof(CONSUMED_SEED) - 1);
  seeds_push(seeds, digest, 32);
}

static u64 consume(const Context *ctx, Account *payer, Account *consumed, const VerifiedVaa *vaa,
                   Consumed **out) {
  Seeds seeds;
  consumed_seeds(&seeds, vaa->digest);
  TRY(find_pda(ctx, consumed, &seeds));
  if (equal(account_owner(consumed), ctx->program_id, 32)) {
    return ERR_ALREADY_CONSUMED;
  }
  TRY(create_pda(ctx, payer, consumed, &seeds, sizeof(Consumed) + vaa->payload_len));
  Consumed *record = (Consumed *)account_data(consumed);
  record->kind = KIND_CONSUMED;
  copy(record->digest, vaa->digest, 32);
  record->payload_len = (u32)vaa->payload_len;
  record->applied = 0;
  record->bump = seeds.bump;
  record->recipient_paid = 0;
  record->slashed = 0;
  record->honest_mask = 0;
  record->paid_mask = 0;
  copy(account_data(consumed) + sizeof(Consumed), vaa->payload, vaa->payload_len);
  *out = record;
  return 0;
}

/* Verifies `vaa`, consumes it and applies `pairs` entries of its batch. */
static u64 receive(Context *ctx, const u8 *vaa, u64 vaa_len, u64 first_pair, u64 pairs) {
  Account *payer, *config_account, *set_account, *consumed, *system;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &set_account));
  TRY(account_at(ctx, 3, &consumed));
  TRY(account_at(ctx, 4, &system));
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_system_program(system));
  Batch batch = {payer, NULL, NULL, NULL, consumed, NULL, first_pair, pairs, 0, 0};
  TRY(load_config(ctx, config_account, true, &batch.config));
  TRY(account_at(ctx, 5, &batch.vault));
  TRY(load_vault(ctx, batch.vault, batch.config));

  VerifiedVaa verified;
  Bytes vaa_bytes = {vaa, vaa_len};
  TRY(verify_vaa(ctx, batch.config, set_account, &vaa_bytes, &verified));
  const u8 *payload = verified.payload;
  u64 len = verified.payload_len;
  if (len < PAYLOAD_HEADER_LEN || payload[1] != PROTOCOL_VERSION) {
    return ERR_PAYLOAD_MALFORMED;
  }
  if (read_be16(payload + 2) != SOLANA_CHAIN || !equal(payload + 4, ctx->program_id, 32)) {
    return ERR_WRONG_TARGET;
  }
  u64 count;
  TRY(check_batch(payload, len, &count));
  TRY(consume(ctx, payer, consumed, &verified, &batch.record));
  return apply_entries(ctx, &batch);
}

u64 process_receive_message(Context *ctx) {
  if (ctx->data_len < 3) {
    return ERR_INVALID_INSTRUCTION;
  }
  return receive(ctx, ctx->data + 2, ctx->data_len - 2, 6, ctx->data[1]);
}

u64 process_receive_from_buffer(Context *ctx) {
  Account *payer, *buffer;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 6, &buffer));
  if (ctx->data_len != 2) {
    return ERR_INVALID_INSTRUCTION;
  }
  Bytes vaa;
  TRY(load_vaa_buffer(ctx, buffer, payer, &vaa));
  TRY(receive(ctx, vaa.addr, vaa.len, 7, ctx->data[1]));
  return close_account(buffer, payer);
}

u64 process_apply_batch(Context *ctx) {
  Account *payer, *config_account, *consumed, *system;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &consumed));
  TRY(account_at(ctx, 3, &system));
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_system_program(system));
  if (ctx->data_len != 2) {
    return ERR_INVALID_INSTRUCTION;
  }
  Batch batch = {payer, NULL, NULL, NULL, consumed, NULL, 5, ctx->data[1], 0, 0};
  TRY(load_config(ctx, config_account, true, &batch.config));
  TRY(account_at(ctx, 4, &batch.vault));
  TRY(load_vault(ctx, batch.vault, batch.config));
  TRY(require_program_account(ctx, consumed, KIND_CONSUMED, sizeof(Consumed)));
  TRY(require_writable(consumed));
  Consumed *record = (Consumed *)account_data(consumed);
  if (sizeof(Consumed) + record->payload_len > account_data_len(consumed)) {
    return ERR_WRONG_ACCOUNT;
  }
  Seeds seeds;
  consumed_seeds(&seeds, record->digest);
  TRY(require_pda(ctx, consumed, &seeds, record->bump));
  u64 count;
  TRY(check_batch((const u8 *)record + sizeof(Consumed), record->payload_len, &count));
  if (record->applied >= count) {
    return ERR_BATCH_COMPLETE;
  }
  if (batch.pairs == 0) {
    return ERR_MISSING_ACCOUNTS;
  }
  batch.record = record;
  return apply_entries(ctx, &batch);
}
