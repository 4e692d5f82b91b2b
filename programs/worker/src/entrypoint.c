/* The program entrypoint: parse the input into a Context kept on the heap, then dispatch. */
#include "worker.h"

u64 entrypoint(u8 *input) {
  Context *ctx = (Context *)HEAP_START;
  TRY(parse_input(input, ctx));
  if (ctx->data_len == 0) {
    return ERR_INVALID_INSTRUCTION;
  }
  switch (ctx->data[0]) {
    case IX_INITIALIZE:
      return process_initialize(ctx);
    case IX_REGISTER:
      return process_register(ctx);
    case IX_RECEIVE_MESSAGE:
      return process_receive_message(ctx);
    case IX_COMMIT_UPDATE:
      return process_commit_update(ctx);
    case IX_BEGIN_UNSTAKE:
      return process_begin_unstake(ctx);
    case IX_WITHDRAW:
      return process_withdraw(ctx);
    case IX_SET_GUARDIAN_SET:
      return process_set_guardian_set(ctx);
    case IX_WRITE_BUFFER:
      return process_write_buffer(ctx);
    case IX_RECEIVE_FROM_BUFFER:
      return process_receive_from_buffer(ctx);
    case IX_CLOSE_BUFFER:
      return process_close_buffer(ctx);
    case IX_APPLY_BATCH:
      return process_apply_batch(ctx);
    case IX_STAKE:
      return process_stake(ctx);
    case IX_RELEASE_EXPIRED_TASK:
      return process_release_expired_task(ctx);
    case IX_CLAIM_SLASHED:
      return process_claim_slashed(ctx);
    case IX_APPEND_THRESHOLD_KEY:
      return process_append_threshold_key(ctx);
    case IX_PUBLISH_COMMITMENTS:
      return process_publish_commitments(ctx);
    default:
      return ERR_INVALID_INSTRUCTION;
  }
}
