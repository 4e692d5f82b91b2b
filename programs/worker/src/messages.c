/*
 * Publishing: each outgoing message gets its own account at PDA ["message", sequence u64 BE]
 * holding a MessageHeader and the payload, and is logged with sol_log_data as two fields:
 * (sequence u64 BE | timestamp u32 BE | nonce u32 BE | consistency u8) and the payload.
 * A guardian rebuilds the VAA body from the account: emitter chain 1, emitter = program id.
 *
 * The message account must be the one of config.next_sequence; a caller that read the sequence
 * before another transaction published gets STALE_SEQUENCE and builds its transaction again.
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
  if (find_pda(ctx, message, &seeds)) {
    return ERR_STALE_SEQUENCE;
  }
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

u64 units_to_lamports(u64 units) {
  u64 max = (u64)-1;
  return units > max / LAMPORTS_PER_STAKE_UNIT ? max : units * LAMPORTS_PER_STAKE_UNIT;
}

/* task_id = keccak256(u64 job_id || u32 round || u16 chain 1 || worker_key), as PROTOCOL.md. */
void compute_task_id(u64 job_id, u32 round, const u8 *worker_key, u8 *out) {
  u8 preimage[46];
  write_be64(preimage, job_id);
  write_be32(preimage + 8, round);
  write_be16(preimage + 12, SOLANA_CHAIN);
  copy(preimage + 14, worker_key, 32);
  Bytes slice = {preimage, sizeof(preimage)};
  sol_keccak256(&slice, 1, out);
}

/* STAKE_CHANGED (5): worker_key, stake u64 (8 decimals), nonce u64, reason u8, task_id. */
u64 publish_stake_changed(const Context *ctx, Config *config, Account *payer, Account *message,
                          const StakeChange *change) {
  u8 payload[STAKE_CHANGED_LEN];
  payload[0] = PAYLOAD_STAKE_CHANGED;
  payload[1] = PROTOCOL_VERSION;
  write_be16(payload + 2, config->peer_chain);
  copy(payload + 4, config->peer_emitter, 32);
  write_be64(payload + 36, 0);
  copy(payload + 44, change->worker_key, 32);
  write_be64(payload + 76, change->stake_lamports / LAMPORTS_PER_STAKE_UNIT);
  write_be64(payload + 84, change->nonce);
  payload[92] = change->reason;
  if (change->task_id) {
    copy(payload + 93, change->task_id, 32);
  } else {
    zero(payload + 93, 32);
  }
  Outgoing out = {config, payer, message, payload, STAKE_CHANGED_LEN, 0};
  return publish_message(ctx, &out);
}
