/* Host harness for programs/worker/src/u256.c: reads "a b" (64 hex digits each) per line and
 * prints a * b mod Q. The few helpers u256.c uses from bytes.c are defined here. */
#include <stdio.h>
#include <string.h>

#include "worker.h"

void copy(void *dst, const void *src, u64 n) { memcpy(dst, src, n); }
void zero(void *dst, u64 n) { memset(dst, 0, n); }
u32 read_be32(const u8 *p) { return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | p[3]; }
void write_be32(u8 *p, u32 v) {
  p[0] = (u8)(v >> 24);
  p[1] = (u8)(v >> 16);
  p[2] = (u8)(v >> 8);
  p[3] = (u8)v;
}

static int parse(const char *hex, u8 *out) {
  for (int i = 0; i < 32; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return 0;
    out[i] = (u8)byte;
  }
  return 1;
}

int main(void) {
  char a_hex[80], b_hex[80];
  while (scanf("%79s %79s", a_hex, b_hex) == 2) {
    u8 a_be[32], b_be[32], out[32];
    if (!parse(a_hex, a_be) || !parse(b_hex, b_be)) return 2;
    U256 a, b, product;
    u256_from_be(&a, a_be);
    u256_from_be(&b, b_be);
    u256_mulmod_q(&product, &a, &b);
    u256_to_be(out, &product);
    for (int i = 0; i < 32; i++) printf("%02x", out[i]);
    printf(" %d %d\n", u256_below_q(&a), u256_is_zero(&product));
  }
  return 0;
}
