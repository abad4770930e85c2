/* log: one line per event on stderr, journald-friendly ("<N>" priority
 * prefix when stderr is not a tty), key=value style by convention.
 * Never pass secrets or message bodies at LOG_INFO or above. Thread-safe. */
#ifndef MB_LOG_H
#define MB_LOG_H

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARN = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void log_set_level(enum log_level level);
/* "error" | "warn" | "info" | "debug"; returns -1 on an unknown name. */
int log_level_from_name(const char *name, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
