/*
 * The Solana runtime ABI as seen from a C program built with clang's BPF target:
 * fixed-width types, syscall declarations, the cross-program-invocation structures
 * and accessors for the serialized program input ("aligned" serialization).
 *
 * Layouts follow Solana's documented program ABI; names are this project's own.
 */
#ifndef FEDRELAY_SOLANA_ABI_H
#define FEDRELAY_SOLANA_ABI_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define PUBKEY_LEN 32

/* Fixed VM regions (SBPFv0). The heap is 32 KiB of zeroed scratch memory per instruction. */
#define HEAP_START ((u8 *)0x300000000UL)
#define HEAP_SIZE (32 * 1024)

/* ---- syscalls ---------------------------------------------------------------------------- */

typedef struct {
  const u8 *addr;
  u64 len;
} Bytes; /* a slice passed to hashing and logging syscalls */

typedef struct {
  const u8 *addr;
  u64 len;
} SignerSeed;

typedef struct {
  const SignerSeed *addr;
  u64 len;
} SignerSeeds;

typedef struct {
  u64 slot;
  i64 epoch_start_timestamp;
  u64 epoch;
  u64 leader_schedule_epoch;
  i64 unix_timestamp;
} Clock;

typedef struct {
  u64 lamports_per_byte_year;
  u64 exemption_threshold_f64_bits; /* an IEEE-754 double, read as bits: no FPU in the VM */
  u8 burn_percent;
} Rent;

void sol_log_(const char *message, u64 len);
void sol_log_64_(u64 a, u64 b, u64 c, u64 d, u64 e);
void sol_log_pubkey(const u8 *key);
void sol_log_data(const Bytes *fields, u64 count);
u64 sol_keccak256(const Bytes *slices, u64 count, u8 *out32);
u64 sol_secp256k1_recover(const u8 *hash32, u64 recovery_id, const u8 *sig64, u8 *out64);
u64 sol_create_program_address(const SignerSeed *seeds, u64 count, const u8 *program_id,
                               u8 *out32);
u64 sol_try_find_program_address(const SignerSeed *seeds, u64 count, const u8 *program_id,
                                 u8 *out32, u8 *bump);
u64 sol_get_clock_sysvar(Clock *out);
u64 sol_get_rent_sysvar(Rent *out);
void sol_memcpy_(void *dst, const void *src, u64 n);
void sol_memset_(void *dst, u8 value, u64 n);
void sol_memcmp_(const void *a, const void *b, u64 n, int *result);

/* ---- cross-program invocation ---------------------------------------------------------- */

typedef struct {
  const u8 *key;
  u64 *lamports;
  u64 data_len;
  u8 *data;
  const u8 *owner;
  u64 rent_epoch;
  bool is_signer;
  bool is_writable;
  bool executable;
} CpiAccountInfo;

typedef struct {
  const u8 *key;
  bool is_writable;
  bool is_signer;
} CpiAccountMeta;

typedef struct {
  const u8 *program_id;
  const CpiAccountMeta *accounts;
  u64 account_len;
  const u8 *data;
  u64 data_len;
} CpiInstruction;

u64 sol_invoke_signed_c(const CpiInstruction *ix, const CpiAccountInfo *infos, u64 info_count,
                        const SignerSeeds *signers, u64 signer_count);

/* ---- serialized input ------------------------------------------------------------------- */
/*
 * One account in the input buffer:
 *   +0 duplicate marker (0xff = first occurrence), +1 is_signer, +2 is_writable, +3 executable,
 *   +4 padding, +8 key, +40 owner, +72 lamports, +80 data_len, +88 data,
 *   then data_len + 10 KiB realloc room padded to 8, then rent_epoch.
 */
#define ACCOUNT_REALLOC_ROOM 10240
#define ACCOUNT_HEADER 88

typedef u8 Account; /* points at an account's entry in the input buffer */

static inline bool account_is_signer(const Account *a) { return a[1] != 0; }
static inline bool account_is_writable(const Account *a) { return a[2] != 0; }
static inline const u8 *account_key(const Account *a) { return a + 8; }
static inline const u8 *account_owner(const Account *a) { return a + 40; }
static inline u64 *account_lamports(Account *a) { return (u64 *)(a + 72); }
static inline u64 account_data_len(const Account *a) { return *(const u64 *)(a + 80); }
static inline u8 *account_data(Account *a) { return a + ACCOUNT_HEADER; }
static inline u64 account_rent_epoch(const Account *a) {
  u64 room = (account_data_len(a) + ACCOUNT_REALLOC_ROOM + 7) & ~7UL;
  return *(const u64 *)(a + ACCOUNT_HEADER + room);
}

#endif
