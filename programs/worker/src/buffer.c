/*
 * VAAs too large for one transaction are written into a buffer account (PDA
 * ["buffer", authority, id u64 BE]) in chunks, then received with receive_from_buffer, which
 * applies the same checks as receive_message and closes the buffer.
 */
#include "worker.h"

static const char BUFFER_SEED[] = "buffer";

/* write_buffer data: tag, id u64, total_len u32, offset u32, chunk bytes */
#define WRITE_FIXED_LEN 17
#define MAX_BUFFER_LEN 8192

u64 process_write_buffer(Context *ctx) {
  Account *authority, *buffer, *system;
  TRY(account_at(ctx, 0, &authority));
  TRY(account_at(ctx, 1, &buffer));
  TRY(account_at(ctx, 2, &system));
  TRY(require_signer(authority));
  TRY(require_system_program(system));
  TRY(require_writable(buffer));
  if (ctx->data_len < WRITE_FIXED_LEN) {
    return ERR_INVALID_INSTRUCTION;
  }
  const u8 *data = ctx->data;
  u32 total = read_le32(data + 9);
  u32 offset = read_le32(data + 13);
  u64 chunk_len = ctx->data_len - WRITE_FIXED_LEN;
  if (total == 0 || total > MAX_BUFFER_LEN || (u64)offset + chunk_len > total) {
    return ERR_BUFFER_BOUNDS;
  }
  if (!equal(account_owner(buffer), ctx->program_id, 32)) {
    u8 id_be[8];
    write_be64(id_be, read_le64(data + 1));
    Seeds seeds;
    seeds_init(&seeds);
    seeds_push(&seeds, (const u8 *)BUFFER_SEED, sizeof(BUFFER_SEED) - 1);
    seeds_push(&seeds, account_key(authority), 32);
    seeds_push(&seeds, id_be, 8);
    TRY(find_pda(ctx, buffer, &seeds));
    TRY(create_pda(ctx, authority, buffer, &seeds, sizeof(BufferHeader) + total));
    BufferHeader *fresh = (BufferHeader *)account_data(buffer);
    fresh->kind = KIND_BUFFER;
    copy(fresh->authority, account_key(authority), 32);
    fresh->length = total;
  }
  TRY(require_kind(buffer, KIND_BUFFER, sizeof(BufferHeader)));
  BufferHeader *header = (BufferHeader *)account_data(buffer);
  if (!equal(header->authority, account_key(authority), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  if (header->length != total) {
    return ERR_BUFFER_BOUNDS;
  }
  copy(account_data(buffer) + sizeof(BufferHeader) + offset, data + WRITE_FIXED_LEN, chunk_len);
  return 0;
}

u64 load_vaa_buffer(const Context *ctx, Account *buffer, const Account *authority, Bytes *vaa) {
  TRY(require_program_account(ctx, buffer, KIND_BUFFER, sizeof(BufferHeader)));
  TRY(require_writable(buffer));
  BufferHeader *header = (BufferHeader *)account_data(buffer);
  if (!equal(header->authority, account_key(authority), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  if (sizeof(BufferHeader) + header->length > account_data_len(buffer)) {
    return ERR_BUFFER_BOUNDS;
  }
  vaa->addr = account_data(buffer) + sizeof(BufferHeader);
  vaa->len = header->length;
  return 0;
}

u64 process_close_buffer(Context *ctx) {
  Account *authority, *buffer;
  TRY(account_at(ctx, 0, &authority));
  TRY(account_at(ctx, 1, &buffer));
  TRY(require_signer(authority));
  if (ctx->data_len != 1) {
    return ERR_INVALID_INSTRUCTION;
  }
  TRY(require_program_account(ctx, buffer, KIND_BUFFER, sizeof(BufferHeader)));
  BufferHeader *header = (BufferHeader *)account_data(buffer);
  if (!equal(header->authority, account_key(authority), 32)) {
    return ERR_WRONG_ACCOUNT;
  }
  return close_account(buffer, authority);
}
