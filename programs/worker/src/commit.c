/*
 * commit_update: the assigned worker commits its update once, before the deadline, for a task
 * neither settled nor released, while its bonded stake still covers the task's lock. The
 * commitment is kept in the task account and logged; nothing is published.
 *
 * publish_commitments: anyone (the payer of the message account) publishes the commitments of
 * 1..32 tasks of one job round, held and not yet published, as one UPDATE_COMMITTED whose
 * entries follow the order of the task accounts.
 *
 * commit_update accounts: 0 worker (signer), 1 task (writable), 2 worker record.
 * publish_commitments accounts: 0 payer (signer, writable), 1 config (writable), 2 message of
 * config.next_sequence (writable), 3 system program, 4.. the task accounts (writable).
 */
#include "worker.h"

/* commit_update data: tag, job_id u64, round u32, update_hash[32], transcript_root[32],
 * data_root[32], num_samples u32, train_loss u32 */
#define COMMIT_LEN 117
/* publish_commitments data: tag, job_id u64, round u32, nonce u32 */
#define PUBLISH_LEN 17
#define PUBLISH_FIRST_TASK 4

/* A task's UPDATE_COMMITTED entry: worker_key, update_hash, transcript_root, data_root,
 * num_samples u32 BE, train_loss u32 BE. */
static void write_entry(u8 *entry, const Task *task) {
  copy(entry, task->worker_key, 32);
  copy(entry + 32, task->update_hash, 32);
  copy(entry + 64, task->transcript_root, 32);
  copy(entry + 96, task->data_root, 32);
  write_be32(entry + 128, task->num_samples);
  write_be32(entry + 132, task->train_loss);
}

u64 process_commit_update(Context *ctx) {
  Account *worker, *task_account, *worker_account;
  TRY(account_at(ctx, 0, &worker));
  TRY(account_at(ctx, 1, &task_account));
  TRY(account_at(ctx, 2, &worker_account));
  TRY(require_signer(worker));
  if (ctx->data_len != COMMIT_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  const u8 *data = ctx->data;
  u64 job_id = read_le64(data + 1);
  u32 round = read_le32(data + 9);

  if (account_data_len(task_account) == 0 && !equal(account_owner(task_account), ctx->program_id, 32)) {
    return ERR_NOT_ASSIGNED; /* no task was ever created at this address */
  }
  TRY(require_program_account(ctx, task_account, KIND_TASK, sizeof(Task)));
  TRY(require_writable(task_account));
  Task *task = (Task *)account_data(task_account);
  if (!equal(task->worker_key, account_key(worker), 32)) {
    return ERR_NOT_ASSIGNED;
  }
  if (task->job_id != job_id || task->round != round) {
    return ERR_WRONG_ACCOUNT;
  }
  if (task->committed) {
    return ERR_ALREADY_COMMITTED;
  }
  if (task->settled) {
    return ERR_TASK_ALREADY_SETTLED;
  }
  if (task->released) {
    return ERR_TASK_RELEASED;
  }
  /* the worker's own record, read only */
  TRY(require_program_account(ctx, worker_account, KIND_WORKER, sizeof(Worker)));
  Worker *record = (Worker *)account_data(worker_account);
  if (!equal(record->key, account_key(worker), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  if (record->stake < task->stake_lock) {
    sol_log_64_(record->stake, task->stake_lock, 0, 0, 0);
    return ERR_STAKE_TOO_LOW;
  }
  if (now_unix() > task->deadline) {
    return ERR_DEADLINE_PASSED;
  }
  task->committed = 1;
  copy(task->update_hash, data + 13, 32);
  copy(task->transcript_root, data + 45, 32);
  copy(task->data_root, data + 77, 32);
  task->num_samples = read_le32(data + 109);
  task->train_loss = read_le32(data + 113);

  /* for observers: (job_id u64 BE | round u32 BE) and the entry publish_commitments will write */
  u8 where[12];
  u8 entry[COMMITTED_ENTRY_LEN];
  write_be64(where, job_id);
  write_be32(where + 8, round);
  write_entry(entry, task);
  Bytes fields[2] = {{where, sizeof(where)}, {entry, sizeof(entry)}};
  sol_log_data(fields, 2);
  return 0;
}

u64 process_publish_commitments(Context *ctx) {
  Account *payer, *config_account, *message, *system;
  TRY(account_at(ctx, 0, &payer));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &message));
  TRY(account_at(ctx, 3, &system));
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_system_program(system));
  if (ctx->data_len != PUBLISH_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  u64 job_id = read_le64(ctx->data + 1);
  u32 round = read_le32(ctx->data + 9);
  u32 nonce = read_le32(ctx->data + 13);
  u64 count = ctx->account_count - PUBLISH_FIRST_TASK;
  if (ctx->account_count <= PUBLISH_FIRST_TASK || count > MAX_BATCH) {
    return ERR_COMMITMENT_COUNT;
  }
  Config *config;
  TRY(load_config(ctx, config_account, true, &config));

  u8 *payload = HEAP_SCRATCH;
  payload[0] = PAYLOAD_UPDATE_COMMITTED;
  payload[1] = PROTOCOL_VERSION;
  write_be16(payload + 2, config->peer_chain);
  copy(payload + 4, config->peer_emitter, 32);
  write_be64(payload + 36, job_id);
  write_be32(payload + 44, round);
  payload[48] = (u8)count;
  for (u64 i = 0; i < count; i++) {
    Account *task_account = ctx->accounts[PUBLISH_FIRST_TASK + i];
    for (u64 j = 0; j < i; j++) {
      if (ctx->accounts[PUBLISH_FIRST_TASK + j] == task_account) {
        return ERR_DUPLICATE_TASK; /* the runtime passes a repeated account as the same entry */
      }
    }
    TRY(require_program_account(ctx, task_account, KIND_TASK, sizeof(Task)));
    TRY(require_writable(task_account));
    Task *task = (Task *)account_data(task_account);
    if (task->job_id != job_id || task->round != round) {
      return ERR_OTHER_ROUND;
    }
    if (!task->committed) {
      return ERR_NOT_COMMITTED;
    }
    if (task->published) {
      return ERR_ALREADY_PUBLISHED;
    }
    task->published = 1;
    write_entry(payload + COMMITTED_FIXED_LEN + COMMITTED_ENTRY_LEN * i, task);
  }
  Outgoing out = {config, payer, message, payload, COMMITTED_FIXED_LEN + COMMITTED_ENTRY_LEN * count,
                  nonce};
  return publish_message(ctx, &out);
}
