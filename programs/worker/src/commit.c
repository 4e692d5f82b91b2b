/*
 * commit_update: the assigned worker commits its update once, before the deadline, for a task
 * neither settled nor released, while its bonded stake still covers the task's lock.
 *
 * Accounts: 0 worker (signer), 1 config, 2 task, 3 message, 4 system program, 5 worker record.
 */
#include "worker.h"

/* commit_update data: tag, job_id u64, round u32, update_hash[32], transcript_root[32],
 * data_root[32], num_samples u32, train_loss u32, nonce u32 */
#define COMMIT_LEN 121

u64 process_commit_update(Context *ctx) {
  Account *worker, *config_account, *task_account, *message, *system, *worker_account;
  TRY(account_at(ctx, 5, &worker_account));
  TRY(account_at(ctx, 0, &worker));
  TRY(account_at(ctx, 1, &config_account));
  TRY(account_at(ctx, 2, &task_account));
  TRY(account_at(ctx, 3, &message));
  TRY(account_at(ctx, 4, &system));
  TRY(require_signer(worker));
  TRY(require_writable(worker));
  TRY(require_system_program(system));
  if (ctx->data_len != COMMIT_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  const u8 *data = ctx->data;
  u64 job_id = read_le64(data + 1);
  u32 round = read_le32(data + 9);
  Config *config;
  TRY(load_config(ctx, config_account, true, &config));

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
  Worker *record;
  TRY(load_own_worker(ctx, worker, worker_account, &record));
  if (record->stake < task->stake_lock) {
    sol_log_64_(record->stake, task->stake_lock, 0, 0, 0);
    return ERR_STAKE_TOO_LOW;
  }
  if (now_unix() > task->deadline) {
    return ERR_DEADLINE_PASSED;
  }
  task->committed = 1;

  u8 payload[UPDATE_COMMITTED_LEN];
  payload[0] = PAYLOAD_UPDATE_COMMITTED;
  payload[1] = PROTOCOL_VERSION;
  write_be16(payload + 2, config->peer_chain);
  copy(payload + 4, config->peer_emitter, 32);
  write_be64(payload + 36, job_id);
  write_be32(payload + 44, round);
  copy(payload + 48, account_key(worker), 32);
  copy(payload + 80, data + 13, 32);  /* update_hash */
  copy(payload + 112, data + 45, 32); /* transcript_root */
  copy(payload + 144, data + 77, 32); /* data_root */
  write_be32(payload + 176, read_le32(data + 109)); /* num_samples */
  write_be32(payload + 180, read_le32(data + 113)); /* train_loss */
  Outgoing out = {config, worker, message, payload, UPDATE_COMMITTED_LEN, read_le32(data + 117)};
  return publish_message(ctx, &out);
}
