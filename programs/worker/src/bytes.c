/* Byte helpers: copies through the runtime's memory syscalls and big-endian field access. */
#include "worker.h"

void copy(void *dst, const void *src, u64 n) {
  if (n) {
    sol_memcpy_(dst, src, n);
  }
}

void zero(void *dst, u64 n) {
  if (n) {
    sol_memset_(dst, 0, n);
  }
}

bool equal(const void *a, const void *b, u64 n) {
  int result = 0;
  sol_memcmp_(a, b, n, &result);
  return result == 0;
}

/* clang may lower struct copies to these; route them to the syscalls. */
void *memcpy(void *dst, const void *src, u64 n) {
  copy(dst, src, n);
  return dst;
}

void *memset(void *dst, int value, u64 n) {
  if (n) {
    sol_memset_(dst, (u8)value, n);
  }
  return dst;
}

u16 read_be16(const u8 *p) { return (u16)(((u16)p[0] << 8) | p[1]); }

u32 read_be32(const u8 *p) {
  return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | (u32)p[3];
}

u64 read_be64(const u8 *p) { return ((u64)read_be32(p) << 32) | read_be32(p + 4); }

void write_be16(u8 *p, u16 v) {
  p[0] = (u8)(v >> 8);
  p[1] = (u8)v;
}

void write_be32(u8 *p, u32 v) {
  p[0] = (u8)(v >> 24);
  p[1] = (u8)(v >> 16);
  p[2] = (u8)(v >> 8);
  p[3] = (u8)v;
}

void write_be64(u8 *p, u64 v) {
  write_be32(p, (u32)(v >> 32));
  write_be32(p + 4, (u32)v);
}

u32 read_le32(const u8 *p) {
  return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

u64 read_le64(const u8 *p) { return (u64)read_le32(p) | ((u64)read_le32(p + 4) << 32); }
