/* Instruction count of the code between two int3 (bench/kernel_cpu_time.cpp built with
 * -DICOUNT), by single-stepping it with ptrace: exact and deterministic, for AVX-512 code
 * too (valgrind does not implement AVX-512; this VM exposes no hardware counters). With -h,
 * a histogram of the instruction addresses in [LO, HI) goes to OUT ("address count" lines;
 * addr2line -e BIN maps them to source lines; build with -no-pie -g).
 *
 *   gcc -O2 bench/icount.c -o /tmp/icount
 *   /tmp/icount [-h LO HI OUT] /tmp/kt_icount CONFIG.bin 200 1
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char** argv) {
  unsigned long lo = 0, hi = 0, *hist = NULL;
  const char* out = NULL;
  int a = 1;
  if (argc > 5 && !strcmp(argv[1], "-h")) {
    lo = strtoul(argv[2], 0, 0);
    hi = strtoul(argv[3], 0, 0);
    out = argv[4];
    a = 5;
    hist = calloc(hi - lo, sizeof *hist);
  }
  if (a >= argc) {
    fprintf(stderr, "usage: %s [-h LO HI OUT] PROGRAM ARGS...\n", argv[0]);
    return 2;
  }
  const pid_t pid = fork();
  if (pid == 0) {
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    execv(argv[a], argv + a);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0); /* stopped at exec */
  ptrace(PTRACE_CONT, pid, 0, 0);
  waitpid(pid, &st, 0); /* the first int3 */
  if (WIFEXITED(st)) {
    fprintf(stderr, "no int3: build with -DICOUNT\n");
    return 1;
  }
  unsigned long n = 0;
  for (;;) {
    struct user_regs_struct r;
    ptrace(PTRACE_GETREGS, pid, 0, &r);
    if ((ptrace(PTRACE_PEEKTEXT, pid, (void*)r.rip, 0) & 0xff) == 0xcc) break; /* the second */
    if (hist && r.rip >= lo && r.rip < hi) hist[r.rip - lo]++;
    if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0) break;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st)) break;
    ++n;
  }
  kill(pid, SIGKILL);
  printf("instructions %lu\n", n);
  if (hist) {
    FILE* f = fopen(out, "w");
    for (unsigned long i = 0; i < hi - lo; ++i)
      if (hist[i]) fprintf(f, "%lx %lu\n", lo + i, hist[i]);
    fclose(f);
  }
  return 0;
}
