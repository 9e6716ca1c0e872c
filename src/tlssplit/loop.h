/*
 * The KMIP worker process's event loop (loop.c; docs/tls-split.md,
 * "Application channel"): one thread that reads the requests of all the
 * process's connections, sends every request complete in one round of
 * readiness to keyfleetd with one write, reads the answers as they come
 * (many per read) and seals each into its connection's socket. A connection
 * costs a thread switch only when it must wait for something the loop does
 * not do: its handshake, a record for the session handler, a peer too slow
 * to take its answer. Then its own thread does that with the blocking calls
 * and gives the connection back.
 */
#ifndef KF_TLSSPLIT_LOOP_H
#define KF_TLSSPLIT_LOOP_H

#include "app.h"

typedef struct kf_app_loop kf_app_loop;

/* Called once, from the loop thread, when the application channel is over:
 * reason KF_ERR_IO (keyfleetd closed it) or KF_ERR_SPLIT_APP (it broke the
 * protocol). Every connection the loop holds ends. */
typedef void (*kf_app_loop_end_fn)(void *arg, int reason);

/* Takes over rd (its fd is the channel). Makes its epoll set and wake pipe
 * (before the process confines itself); the thread starts with _run. */
KF_RESULT int kf_app_loop_new(struct kf_app_reader *rd, const struct kf_app_settings *set,
                              kf_app_loop_end_fn on_end, void *arg, kf_app_loop **out);
KF_RESULT int kf_app_loop_run(kf_app_loop *l);
/* On the connection's own thread, once the handshake is done: serve KMIP on c
 * until the connection ends (the caller closes c). KF_ERR_LIMIT: more
 * connections than the settings allow (nothing was read). */
KF_RESULT int kf_app_loop_serve(kf_app_loop *l, kf_tlssplit_conn *c, const char *peer);
/* Tell keyfleetd that one dispatched connection is over. */
int kf_app_loop_closed(kf_app_loop *l);
bool kf_app_loop_alive(kf_app_loop *l);

#endif
