/*
 * receive_message, receive_from_buffer and apply_batch.
 *
 * Receiving verifies a VAA, checks its payload completely, and consumes its digest by creating
 * the record at PDA ["consumed", digest], which keeps the payload. Then the batch entries
 * (TASK_ASSIGNED or ROUND_SETTLED) whose accounts the transaction carries are applied; a batch
 * too large for one transaction is finished by apply_batch, entry by entry in order.
 *
 * receive_* accounts: 0 payer (signer, writable), 1 config (writable), 2 guardian set,
 * 3 consumed PDA (writable), 4 system program, [5 buffer (writable), receive_from_buffer only],
 * then for each entry applied, in payload order: the worker account and the task account.
 * apply_batch accounts: 0 payer, 1 config, 2 consumed record, 3 system program, then pairs.
 */
#include "worker.h"

static const char CONSUMED_SEED[] = "consumed";
static const char TASK_SEED[] = "task";

#define TASK_ENTRY_LEN 36
#define TASK_FIXED_LEN 121
#define SETTLE_ENTRY_LEN 41
#define SETTLE_FIXED_LEN 81
#define OUTCOME_SLASHED 2

typedef struct {
  Account *payer;
  Config *config;
  const u8 *payload;
  u64 first_pair; /* account index of the first (worker, task) pair */
} Batch;

/* Checks a TASK_ASSIGNED or ROUND_SETTLED payload completely; returns its entry count. */
static u64 check_batch(const u8 *payload, u64 len, u64 *count) {
  u64 fixed, entry;
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
  if (payload[0] == PAYLOAD_ROUND_SETTLED) {
    for (u64 i = 0; i < *count; i++) {
      if (payload[fixed + entry * i + 32] > OUTCOME_SLASHED) {
        return ERR_PAYLOAD_MALFORMED;
      }
    }
  }
  return 0;
}

static u64 load_entry_worker(const Context *ctx, Account *account, const u8 *key, Worker **out) {
  if (!equal(account_owner(account), ctx->program_id, 32)) {
    return account_data_len(account) == 0 ? ERR_WORKER_NOT_REGISTERED : ERR_WRONG_OWNER;
  }
  TRY(require_kind(account, KIND_WORKER, sizeof(Worker)));
  TRY(require_writable(account));
  Worker *worker = (Worker *)account_data(account);
  if (!equal(worker->key, key, 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  *out = worker;
  return 0;
}

static u64 assign_task(const Context *ctx, const Batch *batch, u64 entry_index, u64 pair) {
  const u8 *payload = batch->payload;
  const u8 *entry = payload + TASK_FIXED_LEN + TASK_ENTRY_LEN * entry_index;
  Account *worker_account, *task_account;
  TRY(account_at(ctx, batch->first_pair + 2 * pair, &worker_account));
  TRY(account_at(ctx, batch->first_pair + 2 * pair + 1, &task_account));
  Worker *worker;
  TRY(load_entry_worker(ctx, worker_account, entry, &worker));
  if (equal(account_owner(task_account), ctx->program_id, 32)) {
    return ERR_TASK_EXISTS;
  }
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)TASK_SEED, sizeof(TASK_SEED) - 1);
  seeds_push(&seeds, payload + 36, 8); /* job_id, big-endian as in the payload */
  seeds_push(&seeds, payload + 44, 4); /* round */
  seeds_push(&seeds, entry, 32);
  TRY(find_pda(ctx, task_account, &seeds));
  TRY(create_pda(ctx, batch->payer, task_account, &seeds, sizeof(Task)));
  Task *task = (Task *)account_data(task_account);
  task->kind = KIND_TASK;
  copy(task->worker_key, entry, 32);
  copy(task->model_hash, payload + 56, 32);
  copy(task->config_hash, payload + 88, 32);
  task->job_id = read_be64(payload + 36);
  task->deadline = read_be64(payload + 48);
  task->round = read_be32(payload + 44);
  task->shard = read_be32(entry + 32);
  task->bump = seeds.bump;
  worker->assigned += 1;
  return 0;
}

static u64 settle_task(const Context *ctx, const Batch *batch, u64 entry_index, u64 pair) {
  const u8 *payload = batch->payload;
  const u8 *entry = payload + SETTLE_FIXED_LEN + SETTLE_ENTRY_LEN * entry_index;
  Account *worker_account, *task_account;
  TRY(account_at(ctx, batch->first_pair + 2 * pair, &worker_account));
  TRY(account_at(ctx, batch->first_pair + 2 * pair + 1, &task_account));
  Worker *worker;
  TRY(load_entry_worker(ctx, worker_account, entry, &worker));
  if (account_data_len(task_account) == 0 &&
      !equal(account_owner(task_account), ctx->program_id, 32)) {
    return ERR_NOT_ASSIGNED;
  }
  TRY(require_program_account(ctx, task_account, KIND_TASK, sizeof(Task)));
  TRY(require_writable(task_account));
  Task *task = (Task *)account_data(task_account);
  if (!equal(task->worker_key, entry, 32) || task->job_id != read_be64(payload + 36) ||
      task->round != read_be32(payload + 44)) {
    return ERR_WRONG_ACCOUNT;
  }
  if (task->settled) {
    return ERR_TASK_ALREADY_SETTLED;
  }
  u8 outcome = entry[32];
  task->settled = 1;
  task->outcome = outcome;
  if (worker->assigned > 0) {
    worker->assigned -= 1;
  }
  if (outcome == OUTCOME_SLASHED) {
    u64 units = read_be64(entry + 33);
    u64 amount = worker->stake; /* a slash too large to express takes everything */
    if (units <= worker->stake / LAMPORTS_PER_STAKE_UNIT) {
      amount = units * LAMPORTS_PER_STAKE_UNIT;
    }
    worker->stake -= amount;
    batch->config->slashed_lamports += amount;
  }
  return 0;
}

/* Applies the next entries of the batch in `record`, one per (worker, task) account pair. */
static u64 apply_entries(const Context *ctx, Batch *batch, Consumed *record) {
  u64 count;
  batch->payload = (const u8 *)record + sizeof(Consumed);
  TRY(check_batch(batch->payload, record->payload_len, &count));
  u64 pairs = ctx->account_count > batch->first_pair
                  ? (ctx->account_count - batch->first_pair) / 2
                  : 0;
  if (pairs > count - record->applied) {
    pairs = count - record->applied;
  }
  for (u64 pair = 0; pair < pairs; pair++) {
    u64 entry = record->applied + pair;
    if (batch->payload[0] == PAYLOAD_TASK_ASSIGNED) {
      TRY(assign_task(ctx, batch, entry, pair));
    } else {
      TRY(settle_task(ctx, batch, entry, pair));
    }
  }
  record->applied += (u16)pairs;
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
  copy(account_data(consumed) + sizeof(Consumed), vaa->payload, vaa->payload_len);
  *out = record;
  return 0;
}

/* Verifies `vaa`, consumes it and applies what the accounts allow of its batch. */
static u64 receive(Context *ctx, const u8 *vaa, u64 vaa_len, u64 first_pair) {
  Account *payer, *config_account, *set_account, *consumed, *system;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &set_account));
  TRY(account_at(ctx, 3, &consumed));
  TRY(account_at(ctx, 4, &system));
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_system_program(system));
  Batch batch = {payer, NULL, NULL, first_pair};
  TRY(load_config(ctx, config_account, true, &batch.config));

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
  Consumed *record;
  TRY(consume(ctx, payer, consumed, &verified, &record));
  return apply_entries(ctx, &batch, record);
}

u64 process_receive_message(Context *ctx) {
  if (ctx->data_len < 2) {
    return ERR_INVALID_INSTRUCTION;
  }
  return receive(ctx, ctx->data + 1, ctx->data_len - 1, 5);
}

u64 process_receive_from_buffer(Context *ctx) {
  Account *payer, *buffer;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 5, &buffer));
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  TRY(require_program_account(ctx, buffer, KIND_BUFFER, sizeof(BufferHeader)));
  TRY(require_writable(buffer));
  BufferHeader *header = (BufferHeader *)account_data(buffer);
  if (!equal(header->authority, account_key(payer), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  if (sizeof(BufferHeader) + header->length > account_data_len(buffer)) {
    return ERR_BUFFER_BOUNDS;
  }
  TRY(receive(ctx, account_data(buffer) + sizeof(BufferHeader), header->length, 6));
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
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  Batch batch = {payer, NULL, NULL, 4};
  TRY(load_config(ctx, config_account, true, &batch.config));
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
  if (ctx->account_count < 6) {
    return ERR_MISSING_ACCOUNTS;
  }
  return apply_entries(ctx, &batch, record);
}
