/*
 * The program input and the account rules: one check per rule (signer, writable, owner, kind,
 * PDA), and creation/closing of program-derived accounts through the system program.
 */
#include "worker.h"

static const u8 SYSTEM_PROGRAM_ID[32] = {0};

u64 parse_input(u8 *input, Context *ctx) {
  u64 count = *(u64 *)input;
  u8 *p = input + 8;
  if (count > MAX_ACCOUNTS) {
    return ERR_INVALID_INSTRUCTION;
  }
  for (u64 i = 0; i < count; i++) {
    if (p[0] == 0xff) {
      ctx->accounts[i] = p;
      u64 data_len = *(u64 *)(p + 80);
      u64 room = (data_len + ACCOUNT_REALLOC_ROOM + 7) & ~7UL;
      p += ACCOUNT_HEADER + room + 8;
    } else {
      if (p[0] >= i) {
        return ERR_INVALID_INSTRUCTION; /* a duplicate always refers to an earlier account */
      }
      ctx->accounts[i] = ctx->accounts[p[0]];
      p += 8;
    }
  }
  ctx->account_count = count;
  ctx->data_len = *(u64 *)p;
  ctx->data = p + 8;
  ctx->program_id = p + 8 + ctx->data_len;
  return 0;
}

u64 account_at(const Context *ctx, u64 index, Account **out) {
  if (index >= ctx->account_count) {
    return ERR_MISSING_ACCOUNTS;
  }
  *out = ctx->accounts[index];
  return 0;
}

u64 require_signer(const Account *a) { return account_is_signer(a) ? 0 : ERR_MISSING_SIGNER; }

u64 require_writable(const Account *a) { return account_is_writable(a) ? 0 : ERR_NOT_WRITABLE; }

u64 require_owned(const Context *ctx, const Account *a) {
  return equal(account_owner(a), ctx->program_id, 32) ? 0 : ERR_WRONG_OWNER;
}

u64 require_kind(Account *a, u64 kind, u64 min_len) {
  if (account_data_len(a) < min_len || account_data_len(a) < 8) {
    return ERR_WRONG_ACCOUNT;
  }
  return *(u64 *)account_data(a) == kind ? 0 : ERR_WRONG_ACCOUNT;
}

u64 require_program_account(const Context *ctx, Account *a, u64 kind, u64 min_len) {
  TRY(require_owned(ctx, a));
  return require_kind(a, kind, min_len);
}

u64 require_system_program(const Account *a) {
  return equal(account_key(a), SYSTEM_PROGRAM_ID, 32) ? 0 : ERR_WRONG_ACCOUNT;
}

u64 require_address(const Account *a, const u8 *expected) {
  return equal(account_key(a), expected, 32) ? 0 : ERR_WRONG_ACCOUNT;
}

void seeds_init(Seeds *s) {
  s->count = 0;
  s->bump = 0;
}

void seeds_push(Seeds *s, const u8 *addr, u64 len) {
  s->seeds[s->count].addr = addr;
  s->seeds[s->count].len = len;
  s->count++;
}

/* Checks that `a` is the PDA of the seeds with the stored bump; the bump is kept for signing. */
u64 require_pda(const Context *ctx, const Account *a, Seeds *s, u8 bump) {
  u8 derived[32];
  s->bump = bump;
  s->seeds[s->count].addr = &s->bump;
  s->seeds[s->count].len = 1;
  if (sol_create_program_address(s->seeds, s->count + 1, ctx->program_id, derived)) {
    return ERR_WRONG_ACCOUNT;
  }
  return require_address(a, derived);
}

/* Finds the canonical bump of the seeds and checks that `a` is that address. */
u64 find_pda(const Context *ctx, const Account *a, Seeds *s) {
  u8 derived[32];
  if (sol_try_find_program_address(s->seeds, s->count, ctx->program_id, derived, &s->bump)) {
    return ERR_WRONG_ACCOUNT;
  }
  s->seeds[s->count].addr = &s->bump;
  s->seeds[s->count].len = 1;
  return require_address(a, derived);
}

static void fill_info(CpiAccountInfo *info, Account *a) {
  info->key = account_key(a);
  info->lamports = account_lamports(a);
  info->data_len = account_data_len(a);
  info->data = account_data(a);
  info->owner = account_owner(a);
  info->rent_epoch = account_rent_epoch(a);
  info->is_signer = account_is_signer(a);
  info->is_writable = account_is_writable(a);
  info->executable = a[3] != 0;
}

static u64 rent_exempt_minimum(u64 space) {
  Rent rent;
  if (sol_get_rent_sysvar(&rent)) {
    return 0;
  }
  u64 base = (128 + space) * rent.lamports_per_byte_year;
  u64 bits = rent.exemption_threshold_f64_bits;
  u64 exponent = (bits >> 52) & 0x7ff;
  if (exponent < 1023) {
    return base; /* a threshold below 1 year: paying one year is more than enough */
  }
  u64 shift = exponent - 1023;
  if (shift > 20) {
    return 0;
  }
  u64 mantissa = (bits & ((1UL << 52) - 1)) | (1UL << 52);
  u64 whole = mantissa >> (52 - shift);
  u64 fraction = mantissa & ((1UL << (52 - shift)) - 1);
  return base * (whole + (fraction ? 1 : 0));
}

/* Invokes the system program with `data` on (from, to); `to` signs with the PDA seeds. */
static u64 system_call(Account *from, Account *to, const u8 *data, u64 data_len, Seeds *s) {
  CpiAccountInfo infos[2];
  CpiAccountMeta metas[2];
  u64 n = 0;
  if (from) {
    fill_info(&infos[n], from);
    metas[n].key = account_key(from);
    metas[n].is_writable = true;
    metas[n].is_signer = true;
    n++;
  }
  fill_info(&infos[n], to);
  metas[n].key = account_key(to);
  metas[n].is_writable = true;
  metas[n].is_signer = true; /* the PDA signs through the seeds */
  n++;
  CpiInstruction ix = {SYSTEM_PROGRAM_ID, metas, n, data, data_len};
  SignerSeeds signer = {s->seeds, s->count + 1};
  return sol_invoke_signed_c(&ix, infos, n, &signer, 1);
}

/*
 * Creates the program-owned account `target` at the PDA of `s` (bump already set by find_pda or
 * require_pda), paid by `payer`. An address someone pre-funded is still taken over: top up,
 * allocate and assign instead of create.
 */
u64 create_pda(const Context *ctx, Account *payer, Account *target, Seeds *s, u64 space) {
  u8 data[52];
  u64 needed = rent_exempt_minimum(space);
  if (needed == 0) {
    return ERR_ARITHMETIC;
  }
  TRY(require_signer(payer));
  TRY(require_writable(payer));
  TRY(require_writable(target));
  if (!equal(account_owner(target), SYSTEM_PROGRAM_ID, 32) || account_data_len(target) != 0) {
    return ERR_WRONG_ACCOUNT;
  }
  u64 have = *account_lamports(target);
  if (have == 0) {
    *(u32 *)data = 0; /* CreateAccount */
    *(u64 *)(data + 4) = needed;
    *(u64 *)(data + 12) = space;
    copy(data + 20, ctx->program_id, 32);
    return system_call(payer, target, data, 52, s) ? ERR_ARITHMETIC : 0;
  }
  if (have < needed) {
    *(u32 *)data = 2; /* Transfer */
    *(u64 *)(data + 4) = needed - have;
    CpiAccountInfo infos[2];
    CpiAccountMeta metas[2] = {{account_key(payer), true, true}, {account_key(target), true, false}};
    fill_info(&infos[0], payer);
    fill_info(&infos[1], target);
    CpiInstruction ix = {SYSTEM_PROGRAM_ID, metas, 2, data, 12};
    if (sol_invoke_signed_c(&ix, infos, 2, NULL, 0)) {
      return ERR_ARITHMETIC;
    }
  }
  *(u32 *)data = 8; /* Allocate */
  *(u64 *)(data + 4) = space;
  if (system_call(NULL, target, data, 12, s)) {
    return ERR_ARITHMETIC;
  }
  *(u32 *)data = 1; /* Assign */
  copy(data + 4, ctx->program_id, 32);
  return system_call(NULL, target, data, 36, s) ? ERR_ARITHMETIC : 0;
}

/* Moves every lamport of the program-owned `a` to `receiver` and wipes its data. */
u64 close_account(Account *a, Account *receiver) {
  TRY(require_writable(a));
  TRY(require_writable(receiver));
  u64 *from = account_lamports(a);
  u64 *to = account_lamports(receiver);
  if (*to + *from < *to) {
    return ERR_ARITHMETIC;
  }
  *to += *from;
  *from = 0;
  zero(account_data(a), account_data_len(a));
  return 0;
}

u64 now_unix(void) {
  Clock clock;
  if (sol_get_clock_sysvar(&clock) || clock.unix_timestamp < 0) {
    return 0;
  }
  return (u64)clock.unix_timestamp;
}
