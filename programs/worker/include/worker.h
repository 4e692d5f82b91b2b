/*
 * fedrelay worker program: account layouts, instruction tags, error codes and the functions
 * shared between the program's translation units. Every byte layout is declared here once;
 * adapters/solana/layout.py mirrors it.
 *
 * Account data is little-endian and naturally aligned (the input buffer places data at an
 * 8-byte boundary). Message payloads are big-endian, as PROTOCOL.md says.
 */
#ifndef FEDRELAY_WORKER_H
#define FEDRELAY_WORKER_H

#include "solana_abi.h"

/* ---- instruction tags (first byte of instruction data) ---------------------------------- */
enum {
  IX_INITIALIZE = 0,
  IX_REGISTER = 1,
  IX_RECEIVE_MESSAGE = 2,
  IX_COMMIT_UPDATE = 3,
  IX_BEGIN_UNSTAKE = 4,
  IX_WITHDRAW = 5,
  IX_SET_GUARDIAN_SET = 6,
  IX_WRITE_BUFFER = 7,
  IX_RECEIVE_FROM_BUFFER = 8,
  IX_CLOSE_BUFFER = 9,
  IX_APPLY_BATCH = 10,
  IX_STAKE = 11,
  IX_RELEASE_EXPIRED_TASK = 12,
  IX_CLAIM_SLASHED = 13,
  IX_APPEND_THRESHOLD_KEY = 16, /* 14 and 15 are reserved */
  IX_PUBLISH_COMMITMENTS = 17,
};

/* ---- error codes (returned as the program's custom error) ------------------------------- */
enum {
  ERR_INVALID_INSTRUCTION = 1,
  ERR_MISSING_SIGNER = 2,
  ERR_NOT_WRITABLE = 3,
  ERR_WRONG_OWNER = 4,
  ERR_WRONG_ACCOUNT = 5,
  ERR_ALREADY_INITIALIZED = 6,
  ERR_NOT_ADMIN = 7,
  ERR_INVALID_GUARDIAN_SET = 8,
  ERR_VAA_MALFORMED = 9,
  ERR_GUARDIAN_SET_MISMATCH = 10,
  ERR_GUARDIAN_SET_EXPIRED = 11,
  ERR_NO_QUORUM = 12,
  ERR_SIGNATURES_NOT_ASCENDING = 13,
  ERR_GUARDIAN_INDEX_OUT_OF_RANGE = 14,
  ERR_HIGH_S = 15,
  ERR_INVALID_SIGNATURE = 16,
  ERR_WRONG_EMITTER = 17,
  ERR_WRONG_TARGET = 18,
  ERR_PAYLOAD_MALFORMED = 19,
  ERR_ALREADY_CONSUMED = 20,
  ERR_WORKER_NOT_REGISTERED = 21,
  ERR_ALREADY_REGISTERED = 22,
  ERR_STAKE_TOO_LOW = 23,
  ERR_NOT_ASSIGNED = 24,
  ERR_ALREADY_COMMITTED = 25,
  ERR_DEADLINE_PASSED = 26,
  ERR_ALREADY_UNBONDING = 27,
  ERR_NOT_UNBONDING = 28,
  ERR_UNBONDING_NOT_OVER = 29,
  ERR_STILL_ASSIGNED = 30,
  ERR_TASK_ALREADY_SETTLED = 31,
  ERR_TASK_EXISTS = 32,
  ERR_BUFFER_BOUNDS = 33,
  ERR_ARITHMETIC = 34,
  ERR_MISSING_ACCOUNTS = 35,
  ERR_INVALID_ARGUMENT = 36,
  ERR_UNKNOWN_GUARDIAN_SET = 37,
  ERR_BATCH_COMPLETE = 38,
  ERR_STAKE_LOCKED = 39,      /* the unbond would leave less bonded stake than open tasks lock */
  ERR_TASK_RELEASED = 40,     /* the task was released by its worker */
  ERR_RELEASE_NOT_DUE = 41,   /* release_at has not passed */
  ERR_STALE_SEQUENCE = 42,    /* a message account is not the next sequence's: read it again */
  ERR_BATCH_INCOMPLETE = 43,  /* slashed funds are paid once the whole batch is applied */
  ERR_NOTHING_TO_CLAIM = 44,
  ERR_UNKNOWN_THRESHOLD_KEY = 45,  /* a version-2 VAA names a key this program does not hold */
  ERR_THRESHOLD_KEY_EXPIRED = 46,  /* a superseded threshold key past its expiration time */
  ERR_NOT_GOVERNANCE = 47,         /* not the governance emitter, or not the current set */
  ERR_GOVERNANCE_PAYLOAD = 48,     /* not a TSS append-key payload for this chain, or a bad key */
  ERR_THRESHOLD_KEY_EXISTS = 49,   /* a key with that index was appended before */
  ERR_COMMITMENT_COUNT = 50,       /* publish_commitments names no task, or more than 32 */
  ERR_OTHER_ROUND = 51,            /* a listed task belongs to another job or round */
  ERR_NOT_COMMITTED = 52,          /* a listed task holds no commitment */
  ERR_ALREADY_PUBLISHED = 53,      /* a listed task's commitment went out before */
  ERR_DUPLICATE_TASK = 54,         /* a task is listed twice */
};

/* ---- protocol constants ------------------------------------------------------------------ */
#define SOLANA_CHAIN 1
#define PROTOCOL_VERSION 4
#define PAYLOAD_WORKER_REGISTERED 1
#define PAYLOAD_TASK_ASSIGNED 2
#define PAYLOAD_UPDATE_COMMITTED 3
#define PAYLOAD_ROUND_SETTLED 4
#define PAYLOAD_STAKE_CHANGED 5
#define PAYLOAD_HEADER_LEN 44
#define WORKER_REGISTERED_LEN 120
/* UPDATE_COMMITTED v4: fixed part 49 bytes (count at 48), entries of 136 */
#define COMMITTED_FIXED_LEN 49
#define COMMITTED_ENTRY_LEN 136
#define COMMITTED_MAX_LEN (COMMITTED_FIXED_LEN + COMMITTED_ENTRY_LEN * MAX_BATCH)
#define STAKE_CHANGED_LEN 125
/* STAKE_CHANGED reasons */
#define STAKE_STAKED 1
#define STAKE_UNBONDING 2
#define STAKE_WITHDRAWN 3
#define STAKE_SLASHED 4
#define STAKE_TASK_REFUSED 5
#define STAKE_TASK_RELEASED 6
/* ROUND_SETTLED slash modes */
#define SLASH_TO_RECIPIENT 0
#define SLASH_TO_HONEST 1
#define OUTCOME_ACCEPTED 0
#define OUTCOME_SLASHED 2
/* TASK_ASSIGNED v2: fixed part 145 bytes, entries of 36 */
#define TASK_OFF_ROUND 44
#define TASK_OFF_DEADLINE 48
#define TASK_OFF_MODEL 56
#define TASK_OFF_CONFIG 88
#define TASK_OFF_MIN_STAKE 120
#define TASK_OFF_STAKE_LOCK 128
#define TASK_OFF_RELEASE_AT 136
#define TASK_FIXED_LEN 145
#define TASK_ENTRY_LEN 36
/* ROUND_SETTLED v2: fixed part 114 bytes, entries of 41 */
#define SETTLE_OFF_ROUND 44
#define SETTLE_OFF_MODE 80
#define SETTLE_OFF_RECIPIENT 81
#define SETTLE_FIXED_LEN 114
#define SETTLE_ENTRY_LEN 41
#define MAX_BATCH 32
#define MAX_GUARDIANS 19
#define LAMPORTS_PER_STAKE_UNIT 10 /* 9-decimal lamports -> 8-decimal protocol amounts */

/* ---- account kinds (first 8 bytes of every account this program owns) ------------------- */
#define KIND_BASE 0x594c524600000000UL /* "FRLY" in the high bytes */
#define KIND_CONFIG (KIND_BASE | 1)
#define KIND_GUARDIAN_SET (KIND_BASE | 2)
#define KIND_WORKER (KIND_BASE | 3)
#define KIND_TASK (KIND_BASE | 4)
#define KIND_CONSUMED (KIND_BASE | 5)
#define KIND_MESSAGE (KIND_BASE | 6)
#define KIND_BUFFER (KIND_BASE | 7)
#define KIND_VAULT (KIND_BASE | 8)
#define KIND_THRESHOLD_KEY (KIND_BASE | 9)

typedef struct {
  u64 kind;
  u8 admin[32];
  u8 peer_emitter[32];
  u64 unbonding_delay;     /* seconds between begin_unstake and withdraw */
  u64 guardian_set_ttl;    /* seconds a replaced guardian set stays valid */
  u64 next_sequence;       /* sequence of the next published message */
  u64 min_stake;           /* lamports */
  u64 slashed_lamports;    /* total slashed, kept in the vault */
  u32 guardian_set_index;  /* the current set */
  u16 peer_chain;          /* Wormhole chain id of the coordinator chain */
  u8 bump;
  u8 vault_bump;
  u8 consistency_level;    /* stamped on published messages */
  u8 pad[7];
} Config;
_Static_assert(sizeof(Config) == 128, "Config layout");

typedef struct {
  u64 kind;
  u64 expiration_time; /* 0 while current; unix seconds after which it is rejected */
  u32 index;
  u8 count;
  u8 bump;
  u8 pad[2];
  u8 keys[MAX_GUARDIANS][20];
} GuardianSet;
_Static_assert(sizeof(GuardianSet) == 408, "GuardianSet layout");

/* A worker record is never closed: its stake nonce must keep increasing for the coordinator
 * chain, which ignores a STAKE_CHANGED whose nonce it has seen. */
typedef struct {
  u64 kind;
  u8 key[32];          /* the worker's Solana address */
  u8 payout[32];       /* payout address on the coordinator chain */
  u64 stake;           /* bonded lamports (slashable, backs tasks) */
  u64 unbonding;       /* lamports requested out, withdrawable from unbonding_at */
  u64 unbonding_at;    /* 0, or the unix time from which withdraw is allowed */
  u64 locked;          /* lamports the open tasks lock: stake never falls below it */
  u64 nonce;           /* STAKE_CHANGED counter (1 for the first change after register) */
  u32 capabilities;
  u32 assigned;        /* open tasks */
  u8 bump;
  u8 pad[7];
} Worker;
_Static_assert(sizeof(Worker) == 128, "Worker layout");

/* A task, created by TASK_ASSIGNED. commit_update stores the worker's commitment in it
 * (committed = 1); publish_commitments copies it into an UPDATE_COMMITTED (published = 1).
 * The offsets of kind (0), job_id (104), round (136), committed (144) and published (149) are
 * fixed: a flusher finds a round's pending commitments with getProgramAccounts filters on them
 * (dataSize 256). */
typedef struct {
  u64 kind;                 /* 0 */
  u8 worker_key[32];        /* 8 */
  u8 model_hash[32];        /* 40 */
  u8 config_hash[32];       /* 72 */
  u64 job_id;               /* 104 */
  u64 deadline;             /* 112 */
  u64 stake_lock;           /* 120: lamports locked until the task is settled or released */
  u64 release_at;           /* 128: unix time after which the worker may release it unsettled */
  u32 round;                /* 136 */
  u32 shard;                /* 140 */
  u8 committed;             /* 144 */
  u8 settled;               /* 145 */
  u8 outcome;               /* 146 */
  u8 bump;                  /* 147 */
  u8 released;              /* 148 */
  u8 published;             /* 149: the commitment went out in an UPDATE_COMMITTED */
  u8 pad[2];
  u8 update_hash[32];       /* 152: the commitment, as commit_update received it */
  u8 transcript_root[32];   /* 184 */
  u8 data_root[32];         /* 216 */
  u32 num_samples;          /* 248 */
  u32 train_loss;           /* 252 */
} Task;
_Static_assert(sizeof(Task) == 256, "Task layout");
_Static_assert(__builtin_offsetof(Task, job_id) == 104, "Task.job_id offset");
_Static_assert(__builtin_offsetof(Task, round) == 136, "Task.round offset");
_Static_assert(__builtin_offsetof(Task, committed) == 144, "Task.committed offset");
_Static_assert(__builtin_offsetof(Task, published) == 149, "Task.published offset");

/* The replay record of a received VAA. For a batch it keeps the verified payload and how many
 * entries were applied, so a batch larger than one transaction's accounts is applied by
 * apply_batch in later transactions. For ROUND_SETTLED it also holds the batch's slashed
 * lamports (moved out of the vault) until claim_slashed pays them to the payload's recipient or
 * to the honest workers (entries in honest_mask). */
typedef struct {
  u64 kind;
  u8 digest[32];
  u32 payload_len;
  u16 applied; /* batch entries applied so far */
  u8 bump;
  u8 recipient_paid;
  u64 slashed;      /* lamports slashed by this batch, held in this account */
  u32 honest_mask;  /* entries applied as ACCEPTED (bit i = entry i) */
  u32 paid_mask;    /* honest entries whose share was paid */
  /* payload bytes follow */
} Consumed;
_Static_assert(sizeof(Consumed) == 64, "Consumed layout");

typedef struct {
  u64 kind;
  u64 sequence;
  u32 timestamp;
  u32 nonce;
  u8 consistency_level;
  u8 pad[3];
  u32 payload_len;
  /* payload bytes follow */
} MessageHeader;
_Static_assert(sizeof(MessageHeader) == 32, "MessageHeader layout");

typedef struct {
  u64 kind;
  u8 authority[32];
  u32 length; /* bytes of VAA held */
  u32 pad;
  /* VAA bytes follow */
} BufferHeader;
_Static_assert(sizeof(BufferHeader) == 48, "BufferHeader layout");

typedef struct {
  u64 kind;
} Vault;

/* A threshold key for version-2 VAAs: the PDA ["threshold_key", index u32 BE]. */
typedef struct {
  u64 kind;
  u8 px[32];               /* x coordinate, big-endian, below the curve order */
  u64 expiration_time;     /* 0 while it is the newest key; unix seconds after which it is refused */
  u32 index;
  u32 guardian_set_index;  /* the guardian set it stands for (the one that appended it) */
  u8 parity;               /* y coordinate mod 2 */
  u8 bump;
  u8 pad[6];
} ThresholdKey;
_Static_assert(sizeof(ThresholdKey) == 64, "ThresholdKey layout");

/* ---- the instruction being processed ------------------------------------------------------ */
#define MAX_ACCOUNTS 80

typedef struct {
  Account *accounts[MAX_ACCOUNTS];
  u64 account_count;
  const u8 *data;
  u64 data_len;
  const u8 *program_id;
} Context;

/* Heap scratch after the Context (8-byte aligned), for data too large for a 512-byte frame. */
#define HEAP_SCRATCH (HEAP_START + ((sizeof(Context) + 7) & ~7UL))
_Static_assert(((sizeof(Context) + 7) & ~7UL) + COMMITTED_MAX_LEN <= HEAP_SIZE, "heap scratch");

/* A seed list under construction, for PDAs (at most 4 seeds plus the bump). */
typedef struct {
  SignerSeed seeds[5];
  u64 count;
  u8 bump;
} Seeds;

/* ---- bytes.c ------------------------------------------------------------------------------ */
void copy(void *dst, const void *src, u64 n);
void zero(void *dst, u64 n);
bool equal(const void *a, const void *b, u64 n);
u16 read_be16(const u8 *p);
u32 read_be32(const u8 *p);
u64 read_be64(const u8 *p);
void write_be16(u8 *p, u16 v);
void write_be32(u8 *p, u32 v);
void write_be64(u8 *p, u64 v);
u64 read_le64(const u8 *p);
u32 read_le32(const u8 *p);

/* ---- accounts.c: one check per account rule --------------------------------------------- */
u64 parse_input(u8 *input, Context *ctx);
u64 account_at(const Context *ctx, u64 index, Account **out);
u64 require_signer(const Account *a);
u64 require_writable(const Account *a);
u64 require_owned(const Context *ctx, const Account *a);
u64 require_kind(Account *a, u64 kind, u64 min_len);
u64 require_program_account(const Context *ctx, Account *a, u64 kind, u64 min_len);
u64 require_system_program(const Account *a);
u64 require_address(const Account *a, const u8 *expected);
void seeds_init(Seeds *s);
void seeds_push(Seeds *s, const u8 *addr, u64 len);
u64 require_pda(const Context *ctx, const Account *a, Seeds *s, u8 bump);
u64 find_pda(const Context *ctx, const Account *a, Seeds *s);
u64 create_pda(const Context *ctx, Account *payer, Account *target, Seeds *s, u64 space);
u64 close_account(Account *a, Account *receiver);
u64 now_unix(void);

/* ---- admin.c ---------------------------------------------------------------------------- */
u64 load_config(const Context *ctx, Account *account, bool writable, Config **out);
u64 load_vault(const Context *ctx, Account *account, const Config *config);

/* ---- messages.c --------------------------------------------------------------------------- */
typedef struct {
  Config *config;
  Account *payer;
  Account *message; /* the PDA ["message", sequence] to create */
  const u8 *payload;
  u64 payload_len;
  u32 nonce;
} Outgoing;

u64 publish_message(const Context *ctx, const Outgoing *out);

/* A STAKE_CHANGED to publish: the worker's bonded stake now and why it changed. */
typedef struct {
  const u8 *worker_key;
  u64 stake_lamports;
  u64 nonce;
  u8 reason;
  const u8 *task_id; /* NULL: 32 zero bytes */
} StakeChange;

u64 publish_stake_changed(const Context *ctx, Config *config, Account *payer, Account *message,
                          const StakeChange *change);
void compute_task_id(u64 job_id, u32 round, const u8 *worker_key, u8 *out);
u64 units_to_lamports(u64 units);

/* ---- stake.c: the instructions a worker signs about its own record ----------------------- */
typedef struct {
  Account *signer;  /* the worker; pays the message */
  Account *message; /* the PDA of the next message */
  Config *config;
  Worker *record;
} WorkerCall;

u64 load_own_worker(const Context *ctx, Account *signer, Account *account, Worker **out);
u64 load_worker_call(Context *ctx, u64 message_at, WorkerCall *call);
u64 report_stake(const Context *ctx, const WorkerCall *call, u8 reason, const u8 *task_id);

/* ---- vaa.c --------------------------------------------------------------------------------- */
typedef struct {
  const u8 *payload;
  u64 payload_len;
  u8 digest[32];
  u32 guardian_set_index;
  u16 emitter_chain;
  const u8 *emitter;
  u64 sequence;
} VerifiedVaa;

/* Version 1: `key_account` is the guardian set named by the VAA; version 2: the threshold key
 * it names. Checks the signatures and the configured peer emitter. */
u64 verify_vaa(const Context *ctx, const Config *config, Account *key_account, const Bytes *vaa,
               VerifiedVaa *out);
/* A version-1 VAA's guardian signatures only (no emitter check), for governance VAAs. */
u64 verify_guardian_vaa(const Context *ctx, Account *guardian_set_account, const Bytes *vaa,
                        VerifiedVaa *out);
u64 load_guardian_set(const Context *ctx, Account *account, u32 index, GuardianSet **out);
/* Recover the address of the key that made the signature `rs` (r then s, 64 bytes) with
 * recovery id `v` over `hash`; false if none recovers. */
bool recover_address(const u8 *hash, u8 v, const u8 *rs, u8 *address);

/* ---- buffer.c ----------------------------------------------------------------------------- */
/* The VAA held in a buffer that `authority` owns (the buffer writable, its length in bounds). */
u64 load_vaa_buffer(const Context *ctx, Account *buffer, const Account *authority, Bytes *vaa);

/* ---- threshold.c ----------------------------------------------------------------------------- */
u64 load_threshold_key(const Context *ctx, Account *account, u32 index, ThresholdKey **out);

/* ---- u256.c: integers mod the secp256k1 order Q in u32 limbs ---------------------------------- */
typedef struct {
  u32 limb[8]; /* little-endian limb order */
} U256;

void u256_from_be(U256 *out, const u8 *be);
void u256_to_be(u8 *be, const U256 *x);
bool u256_is_zero(const U256 *x);
bool u256_below_q(const U256 *x);
void u256_q_minus(U256 *out, const U256 *x);                   /* Q - x, for x <= Q */
void u256_mulmod_q(U256 *out, const U256 *a, const U256 *b);  /* a * b mod Q, any a, b */

/* ---- instructions (one file each family) ------------------------------------------------- */
u64 process_initialize(Context *ctx);
u64 process_set_guardian_set(Context *ctx);
u64 process_register(Context *ctx);
u64 process_commit_update(Context *ctx);
u64 process_begin_unstake(Context *ctx);
u64 process_withdraw(Context *ctx);
u64 process_receive_message(Context *ctx);
u64 process_write_buffer(Context *ctx);
u64 process_receive_from_buffer(Context *ctx);
u64 process_close_buffer(Context *ctx);
u64 process_apply_batch(Context *ctx);
u64 process_stake(Context *ctx);
u64 process_release_expired_task(Context *ctx);
u64 process_claim_slashed(Context *ctx);
u64 process_append_threshold_key(Context *ctx);
u64 process_publish_commitments(Context *ctx);

#define TRY(expr)      \
  do {                 \
    u64 _err = (expr); \
    if (_err) {        \
      return _err;     \
    }                  \
  } while (0)

#endif
