/*
 * Publishing: each outgoing message gets its own account at PDA ["message", sequence u64 BE]
 * holding a MessageHeader and the payload, and is logged with sol_log_data as two fields:
 * (sequence u64 BE | timestamp u32 BE | nonce u32 BE | consistency u8) and the payload.
 * A guardian rebuilds the VAA body from the account: emitter chain 1, emitter = program id.
 */
#include "worker.h"

static const char MESSAGE_SEED[] = "message";

u64 publish_message(const Context *ctx, const Outgoing *out) {
  Config *config = out->config;
  Account *message = out->message;
  const u8 *payload = out->payload;
  u64 payload_len = out->payload_len;
  u32 nonce = out->nonce;
  u8 sequence_be[8];
  u64 sequence = config->next_sequence;
  write_be64(sequence_be, sequence);
  Seeds seeds;
  seeds_init(&seeds);
  seeds_push(&seeds, (const u8 *)MESSAGE_SEED, sizeof(MESSAGE_SEED) - 1);
  seeds_push(&seeds, sequence_be, 8);
  TRY(find_pda(ctx, message, &seeds));
  TRY(create_pda(ctx, out->payer, message, &seeds, sizeof(MessageHeader) + payload_len));

  u32 timestamp = (u32)now_unix();
  MessageHeader *header = (MessageHeader *)account_data(message);
  header->kind = KIND_MESSAGE;
  header->sequence = sequence;
  header->timestamp = timestamp;
  header->nonce = nonce;
  header->consistency_level = config->consistency_level;
  header->payload_len = (u32)payload_len;
  copy(account_data(message) + sizeof(MessageHeader), payload, payload_len);
  config->next_sequence = sequence + 1;

  u8 log_header[17];
  write_be64(log_header, sequence);
  write_be32(log_header + 8, timestamp);
  write_be32(log_header + 12, nonce);
  log_header[16] = config->consistency_level;
  Bytes fields[2] = {{log_header, sizeof(log_header)}, {payload, payload_len}};
  sol_log_data(fields, 2);
  return 0;
}
