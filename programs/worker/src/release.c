/*
 * release_expired_task: a task with no settlement after its release_at stops locking its
 * worker's stake, by the worker's own call; a later settlement entry for it is skipped.
 *
 * claim_slashed: a ROUND_SETTLED batch's slashed lamports wait in its consumed record until the
 * whole batch is applied, then are paid where the payload says. slash_mode TO_RECIPIENT: all to
 * slash_recipient. TO_HONEST: slashed / honest to each ACCEPTED entry that was applied, the
 * remainder (everything when there is none) to slash_recipient. Anyone may send the claim (it
 * only pays for the transaction): the lamports go to the destination account, which must be the
 * recipient or the honest entry's worker key. No other key, the admin included, can move them.
 */
#include "worker.h"

static const char CONSUMED_SEED[] = "consumed";

/* release_expired_task: 0 worker (signer), 1 config, 2 worker record, 3 task, 4 message,
 * 5 system program. */
u64 process_release_expired_task(Context *ctx) {
  WorkerCall call;
  Account *task_account;
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  TRY(load_worker_call(ctx, 4, &call));
  TRY(account_at(ctx, 3, &task_account));
  if (account_data_len(task_account) == 0 &&
      !equal(account_owner(task_account), ctx->program_id, 32)) {
    return ERR_NOT_ASSIGNED;
  }
  TRY(require_program_account(ctx, task_account, KIND_TASK, sizeof(Task)));
  TRY(require_writable(task_account));
  Task *task = (Task *)account_data(task_account);
  if (!equal(task->worker_key, account_key(call.signer), 32)) {
    return ERR_NOT_ASSIGNED;
  }
  if (task->settled) {
    return ERR_TASK_ALREADY_SETTLED;
  }
  if (task->released) {
    return ERR_TASK_RELEASED;
  }
  if (now_unix() <= task->release_at) {
    return ERR_RELEASE_NOT_DUE;
  }
  Worker *record = call.record;
  task->released = 1;
  if (record->assigned > 0) {
    record->assigned -= 1;
  }
  record->locked = record->locked > task->stake_lock ? record->locked - task->stake_lock : 0;
  u8 id[32];
  compute_task_id(task->job_id, task->round, task->worker_key, id);
  return report_stake(ctx, &call, STAKE_TASK_RELEASED, id);
}

static u32 popcount(u32 v) {
  u32 n = 0;
  while (v) {
    n += v & 1;
    v >>= 1;
  }
  return n;
}

/* claim_slashed: 0 consumed record of a ROUND_SETTLED (writable), 1 destination (writable).
 * Data: tag, entry u8 (0xff: the recipient's part; else the honest entry's share). */
u64 process_claim_slashed(Context *ctx) {
  Account *consumed, *destination;
  TRY(account_at(ctx, 0, &consumed));
  TRY(account_at(ctx, 1, &destination));
  if (ctx->data_len != 2) {
    return ERR_INVALID_INSTRUCTION;
  }
  TRY(require_program_account(ctx, consumed, KIND_CONSUMED, sizeof(Consumed)));
  TRY(require_writable(consumed));
  TRY(require_writable(destination));
  Consumed *record = (Consumed *)account_data(consumed);
  if (sizeof(Consumed) + record->payload_len > account_data_len(consumed) ||
      record->payload_len < SETTLE_FIXED_LEN) {
    return ERR_WRONG_ACCOUNT;
  }
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)CONSUMED_SEED, sizeof(CONSUMED_SEED) - 1);
  seeds_push(&seeds, record->digest, 32);
  TRY(require_pda(ctx, consumed, &seeds, record->bump));
  const u8 *payload = account_data(consumed) + sizeof(Consumed);
  if (payload[0] != PAYLOAD_ROUND_SETTLED) {
    return ERR_WRONG_ACCOUNT;
  }
  u64 count = payload[SETTLE_FIXED_LEN - 1];
  if (record->applied < count) {
    return ERR_BATCH_INCOMPLETE;
  }
  u64 honest = popcount(record->honest_mask);
  u64 share = 0;
  if (payload[SETTLE_OFF_MODE] == SLASH_TO_HONEST && honest > 0) {
    share = record->slashed / honest;
  }
  u64 amount;
  u8 entry = ctx->data[1];
  if (entry == 0xff) {
    if (!equal(account_key(destination), payload + SETTLE_OFF_RECIPIENT, 32)) {
      return ERR_WRONG_ACCOUNT;
    }
    amount = record->recipient_paid ? 0 : record->slashed - share * honest;
    record->recipient_paid = 1;
  } else {
    u32 bit = 1U << (entry & 31);
    if (entry >= count || !(record->honest_mask & bit) || (record->paid_mask & bit)) {
      return ERR_NOTHING_TO_CLAIM;
    }
    const u8 *key = payload + SETTLE_FIXED_LEN + SETTLE_ENTRY_LEN * entry;
    if (!equal(account_key(destination), key, 32)) {
      return ERR_WRONG_ACCOUNT;
    }
    amount = share;
    record->paid_mask |= bit;
  }
  if (amount == 0) {
    return ERR_NOTHING_TO_CLAIM;
  }
  u64 *from = account_lamports(consumed);
  u64 *to = account_lamports(destination);
  if (*from < amount || *to + amount < *to) {
    return ERR_ARITHMETIC;
  }
  *from -= amount;
  *to += amount;
  return 0;
}
