/*
 * Confinement of the split endpoint's processes, applied once before they
 * serve anything.
 *
 * A worker process: not dumpable, no core files, an unprivileged user when
 * started as root (nobody/nogroup, no supplementary groups), no new
 * privileges, and a seccomp filter that allows only the system calls the
 * record loop, its channels and its threads need. Opening a file fails with
 * EACCES; everything else kills the process (SECCOMP_RET_KILL_PROCESS): the
 * worker talks to the network peer, so a compromised worker must not be able
 * to open files, sockets to elsewhere, or start programs.
 *
 * The session handler (once its credentials are loaded): not dumpable, no new
 * privileges, and the same filter except that it may open files for reading
 * (a PKCS#11 token such as SoftHSM2 reads its object files as it goes); it
 * keeps its user, which the key file or token needs. It parses every
 * handshake from the network, so it too must not be able to write files,
 * make sockets or start programs.
 *
 * The filters are classic BPF (linux/filter.h) rather than libseccomp: short
 * allow lists.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keyfleet/log.h"
#include "tlssplit_internal.h"

#if defined(__x86_64__)
#define SANDBOX_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_ARCH AUDIT_ARCH_AARCH64
#else
#error "the worker's seccomp filter knows x86_64 and aarch64 only"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KF_SANITIZER_RUNTIME 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KF_SANITIZER_RUNTIME 1
#endif
#endif
#ifndef KF_SANITIZER_RUNTIME
#define KF_SANITIZER_RUNTIME 0
#endif

#define NR_OFF offsetof(struct seccomp_data, nr)
#define ARCH_OFF offsetof(struct seccomp_data, arch)
/* little endian: the low 32 bits of argument i */
#define ARG_LO_OFF(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(uint64_t))

#define ALLOW(nr)                                                                                  \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/* The start of every filter: the right architecture, then the call number in A. */
#define FILTER_HEAD                                                                                \
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARCH_OFF),                                                  \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_ARCH, 1, 0),                                    \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),                                        \
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR_OFF)

/* clone: threads only (CLONE_THREAD set), never a new process; clone3 hides
 * its flags in memory: make glibc fall back to clone. */
#define THREADS_ONLY                                                                               \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4),                                         \
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO_OFF(0)),                                          \
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),                                   \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),                                               \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),                                        \
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),                                     \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS)

/* Opening a file with call nr fails with EACCES. */
#define OPEN_FAILS(nr)                                                                             \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                                               \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES)
/* Opening a file with call nr (its flags in argument arg) for reading is
 * allowed; for writing, appending, creating or truncating it fails with
 * EACCES. (openat2 hides its flags in memory: ENOSYS, see handler_filter.) */
#define OPEN_READ_ONLY(nr, arg)                                                                    \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4),                                               \
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO_OFF(arg)),                                        \
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND, 0, 1), \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),                                      \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/* What every confined process does: I/O and polling on descriptors it already
 * has (plus socketpair for a connection's channels), memory management
 * (including mlock for secure memory), threads, clocks, randomness, exit. */
#define COMMON_CALLS                                                                               \
    ALLOW(__NR_read), ALLOW(__NR_write), ALLOW(__NR_readv), ALLOW(__NR_writev),                    \
        ALLOW(__NR_recvfrom), ALLOW(__NR_sendto), ALLOW(__NR_recvmsg), ALLOW(__NR_sendmsg),         \
        ALLOW(__NR_socketpair), ALLOW(__NR_shutdown), ALLOW(__NR_close), ALLOW(__NR_fcntl),         \
        ALLOW(__NR_lseek), ALLOW(__NR_fstat), ALLOW(__NR_newfstatat), ALLOW(__NR_ppoll),            \
        ALLOW(__NR_epoll_ctl), ALLOW(__NR_epoll_pwait), EPOLL_WAIT_CALL                               \
        POLL_CALL ALLOW(__NR_futex), ALLOW(__NR_set_robust_list), RSEQ_CALL ALLOW(__NR_sched_yield), \
        ALLOW(__NR_mmap), ALLOW(__NR_munmap), ALLOW(__NR_mprotect), ALLOW(__NR_mremap),             \
        ALLOW(__NR_madvise), ALLOW(__NR_brk), ALLOW(__NR_mlock), ALLOW(__NR_munlock),               \
        ALLOW(__NR_clock_gettime), ALLOW(__NR_clock_nanosleep), ALLOW(__NR_nanosleep),              \
        ALLOW(__NR_gettimeofday), ALLOW(__NR_getpid), ALLOW(__NR_gettid), ALLOW(__NR_getrandom),    \
        ALLOW(__NR_rt_sigreturn),                                                                   \
        ALLOW(__NR_rt_sigaction), /* glibc installs its thread-cancel handler at the first thread */ \
        ALLOW(__NR_rt_sigprocmask), ALLOW(__NR_restart_syscall), ALLOW(__NR_exit),                  \
        ALLOW(__NR_exit_group) SANITIZER_CALLS

#ifdef __NR_epoll_wait
#define EPOLL_WAIT_CALL ALLOW(__NR_epoll_wait),
#else
#define EPOLL_WAIT_CALL
#endif
#ifdef __NR_poll
#define POLL_CALL ALLOW(__NR_poll),
#else
#define POLL_CALL
#endif
#ifdef __NR_rseq
#define RSEQ_CALL ALLOW(__NR_rseq),
#else
#define RSEQ_CALL
#endif
#if KF_SANITIZER_RUNTIME
/* ASan/UBSan builds: what their runtime does in every new thread. */
#define SANITIZER_CALLS                                                                            \
    , ALLOW(__NR_sched_getaffinity), ALLOW(__NR_sigaltstack), ALLOW(__NR_getuid), ALLOW(__NR_prctl)
#else
#define SANITIZER_CALLS
#endif

/* A worker: no file opens at all (glibc opens a few files lazily -- malloc
 * reads /sys/devices/system/cpu/online when it adds an arena under load -- and
 * a failed open there is harmless, so they fail rather than kill). */
static const struct sock_filter worker_filter[] = {
    FILTER_HEAD,
    THREADS_ONLY,
    OPEN_FAILS(__NR_openat),
#ifdef __NR_open
    OPEN_FAILS(__NR_open),
#endif
    COMMON_CALLS,
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
};

/* The session handler: the same, and reading files, which the PKCS#11 token
 * needs (SoftHSM2 re-reads its token's object files when they change); no
 * file is opened for writing, no socket made, no program started. */
static const struct sock_filter handler_filter[] = {
    FILTER_HEAD,
    THREADS_ONLY,
    OPEN_READ_ONLY(__NR_openat, 2),
#ifdef __NR_open
    OPEN_READ_ONLY(__NR_open, 1),
#endif
#ifdef __NR_openat2
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
#endif
    COMMON_CALLS,
    ALLOW(__NR_pread64),
    ALLOW(__NR_flock),
    ALLOW(__NR_getdents64),
    ALLOW(__NR_statx),
    ALLOW(__NR_faccessat),
#ifdef __NR_access
    ALLOW(__NR_access),
#endif
    ALLOW(__NR_readlinkat),
#ifdef __NR_readlink
    ALLOW(__NR_readlink),
#endif
    ALLOW(__NR_getuid),
    ALLOW(__NR_geteuid),
    ALLOW(__NR_getgid),
    ALLOW(__NR_getegid),
    ALLOW(__NR_uname),
    ALLOW(__NR_sched_getaffinity),
    ALLOW(__NR_sysinfo),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
};

static int install(const struct sock_filter *f, size_t n)
{
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = (struct sock_filter *)f};
    /* TSYNC: every thread of the process, not only this one. */
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
        return KF_ERR_PERM;
    return KF_OK;
}

/* Locked memory a worker running as nobody may use (256 connections' buffers with room). */
#define WORKER_MEMLOCK ((rlim_t)256 * 1024 * 1024)

static int drop_user(void)
{
    if (geteuid() != 0)
        return KF_OK; /* already unprivileged */
    /* Secure memory (mlock) for each connection's plaintext: as root the limit
     * did not apply, as nobody it does; give it room while still allowed to. */
    struct rlimit lock;
    if (getrlimit(RLIMIT_MEMLOCK, &lock) == 0 && lock.rlim_cur != RLIM_INFINITY &&
        lock.rlim_cur < WORKER_MEMLOCK) {
        lock.rlim_cur = WORKER_MEMLOCK;
        if (lock.rlim_max != RLIM_INFINITY && lock.rlim_max < WORKER_MEMLOCK)
            lock.rlim_max = WORKER_MEMLOCK;
        (void)setrlimit(RLIMIT_MEMLOCK, &lock);
    }
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
        return KF_ERR_PERM;
    /* Must not be able to get root back. */
    if (setresuid(0, 0, 0) == 0 || geteuid() != uid)
        return KF_ERR_PERM;
    return KF_OK;
}

int kf_tlssplit_sandbox(unsigned flags)
{
    struct rlimit no_core = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0)
        return KF_ERR_PERM;
    if (!(flags & KF_TLSSPLIT_SANDBOX_KEEP_USER))
        KF_GUARD(drop_user());
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return KF_ERR_PERM;
    /* A fixed arena count: malloc then never asks how many CPUs there are. */
    mallopt(M_ARENA_MAX, 4);
    if (flags & KF_TLSSPLIT_SANDBOX_NO_FILTER)
        return KF_OK;
    return install(worker_filter, sizeof(worker_filter) / sizeof(worker_filter[0]));
}

int kf_tlssplit_sandbox_handler(void)
{
    struct rlimit no_core = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return KF_ERR_PERM;
    mallopt(M_ARENA_MAX, 4);
    return install(handler_filter, sizeof(handler_filter) / sizeof(handler_filter[0]));
}
