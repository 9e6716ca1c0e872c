/*
 * The session handler's confinement (kf_tlssplit_sandbox_handler,
 * src/tlssplit/sandbox.c): each case runs in a child process that confines
 * itself and then tries one thing. Allowed: threads, reading a file, the
 * calls a handshake needs. Refused: opening a file for writing, creating or
 * truncating it (EACCES, the handler goes on); making a socket, starting a
 * process or a program, or any call not on the list such as ptrace or prctl
 * (the process is killed, SIGSYS).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "keyfleet/tlssplit.h"

#if defined(__SANITIZE_ADDRESS__)
#define KF_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KF_SANITIZER_BUILD 1
#endif
#endif
#ifndef KF_SANITIZER_BUILD
#define KF_SANITIZER_BUILD 0
#endif

enum { OK_EXIT = 7, WRONG_EXIT = 9 };

static void *thread_fn(void *arg)
{
    return arg;
}

/* In the child, after confinement: OK_EXIT when the attempt came out as expected
 * for an allowed or failing call; a killing call never returns. */
static int attempt(const char *what, const char *tmpdir)
{
    char path[512];
    if (strcmp(what, "thread") == 0) {
        pthread_t t;
        void *r = NULL;
        if (pthread_create(&t, NULL, thread_fn, (void *)what) != 0 || pthread_join(t, &r) != 0)
            return WRONG_EXIT;
        return r == what ? OK_EXIT : WRONG_EXIT;
    }
    if (strcmp(what, "read") == 0) {
        snprintf(path, sizeof(path), "%s/readable", tmpdir);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        char b[8] = {0};
        bool ok = fd >= 0 && read(fd, b, sizeof(b)) == 5 && memcmp(b, "hello", 5) == 0;
        if (fd >= 0)
            close(fd);
        return ok ? OK_EXIT : WRONG_EXIT;
    }
    if (strcmp(what, "write") == 0 || strcmp(what, "append") == 0 || strcmp(what, "create") == 0 ||
        strcmp(what, "truncate") == 0) {
        int flags = strcmp(what, "write") == 0    ? O_WRONLY
                    : strcmp(what, "append") == 0 ? O_RDONLY | O_APPEND
                    : strcmp(what, "create") == 0 ? O_RDONLY | O_CREAT
                                                  : O_RDONLY | O_TRUNC;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, strcmp(what, "create") == 0 ? "new" : "readable");
        int fd = open(path, flags | O_CLOEXEC, 0600);
        return fd < 0 && errno == EACCES ? OK_EXIT : WRONG_EXIT;
    }
    if (strcmp(what, "socket") == 0)
        (void)socket(AF_INET, SOCK_STREAM, 0);
    else if (strcmp(what, "fork") == 0) {
        if (fork() == 0)
            _exit(0);
    } else if (strcmp(what, "ptrace") == 0) {
        (void)ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    } else if (strcmp(what, "prctl") == 0) {
        (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    } else if (strcmp(what, "exec") == 0) {
        char *const argv[] = {"true", NULL};
        execv("/bin/true", argv);
    }
    return WRONG_EXIT; /* a killing call returned */
}

/* Run one attempt in a confined child: its wait status. */
static int confined(const char *what, const char *tmpdir)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (kf_tlssplit_sandbox_handler() < 0)
            _exit(WRONG_EXIT + 1);
        _exit(attempt(what, tmpdir));
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

struct fixture {
    char dir[64];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    strcpy(f->dir, "/tmp/kf-sandbox.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/readable", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("hello", fp);
    fclose(fp);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/readable", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/new", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void expect_exit(const char *what, const char *dir)
{
    int status = confined(what, dir);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != OK_EXIT)
        fail_msg("%s: status 0x%x", what, status);
}

static void expect_killed(const char *what, const char *dir)
{
    int status = confined(what, dir);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
        fail_msg("%s: status 0x%x (expected SIGSYS)", what, status);
}

static void test_allowed(void **state)
{
    struct fixture *f = *state;
    expect_exit("thread", f->dir);
    expect_exit("read", f->dir);
}

static void test_no_file_written(void **state)
{
    struct fixture *f = *state;
    expect_exit("write", f->dir);
    expect_exit("append", f->dir);
    expect_exit("create", f->dir);
    expect_exit("truncate", f->dir);
    char path[128];
    snprintf(path, sizeof(path), "%s/new", f->dir);
    assert_int_equal(access(path, F_OK), -1); /* nothing was created */
}

static void test_killed(void **state)
{
    struct fixture *f = *state;
    expect_killed("socket", f->dir);
    expect_killed("fork", f->dir);
    expect_killed("exec", f->dir);
    expect_killed("ptrace", f->dir);
#if !KF_SANITIZER_BUILD /* the sanitizer runtimes need prctl in every thread */
    expect_killed("prctl", f->dir); /* could make it dumpable again */
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_file_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_killed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
