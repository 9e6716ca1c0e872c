/* Logging. Never pass key material, shares, PINs or plaintext to these. */
#ifndef KEYFLEET_LOG_H
#define KEYFLEET_LOG_H

#include <stdint.h>

enum kf_log_level { KF_LOG_DEBUG, KF_LOG_INFO, KF_LOG_WARN, KF_LOG_ERROR };

/* Default: stderr, level INFO. path NULL keeps stderr. */
int kf_log_open(const char *path, enum kf_log_level min_level);
void kf_log(enum kf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define kf_debug(...) kf_log(KF_LOG_DEBUG, __VA_ARGS__)
#define kf_info(...) kf_log(KF_LOG_INFO, __VA_ARGS__)
#define kf_warn(...) kf_log(KF_LOG_WARN, __VA_ARGS__)
#define kf_error(...) kf_log(KF_LOG_ERROR, __VA_ARGS__)

/* Wall-clock time in nanoseconds since the epoch (CLOCK_REALTIME). */
uint64_t kf_now_ns(void);
/* Monotonic nanoseconds, for measuring. */
uint64_t kf_mono_ns(void);

#endif
