/* The one logging sink. Library code never prints: it calls ml_log(), and
 * the application decides where lines go (stderr by default) and which
 * levels pass. The sink and level are set once at start-up, before threads. */
#ifndef ML_LOG_H
#define ML_LOG_H

enum ml_log_level {
	ML_LOG_DEBUG = 0,
	ML_LOG_INFO = 1,
	ML_LOG_WARN = 2,
	ML_LOG_ERROR = 3,
	ML_LOG_NONE = 4,
};

/* Receives one formatted line without trailing newline. |user| is the
 * pointer given to ml_log_set_sink(). Must be thread-safe. */
typedef void (*ml_log_sink)(enum ml_log_level level, const char *line, void *user);

/* Replaces the sink (NULL restores the stderr sink). Not thread-safe: call
 * before starting threads. */
void ml_log_set_sink(ml_log_sink sink, void *user);

/* Lines below |level| are dropped. Default ML_LOG_INFO, or the value of the
 * environment variable MESH_LLM_LOG (debug, info, warn, error, none). */
void ml_log_set_level(enum ml_log_level level);
enum ml_log_level ml_log_get_level(void);

void ml_log(enum ml_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ML_DEBUG(...) ml_log(ML_LOG_DEBUG, __VA_ARGS__)
#define ML_INFO(...) ml_log(ML_LOG_INFO, __VA_ARGS__)
#define ML_WARN(...) ml_log(ML_LOG_WARN, __VA_ARGS__)
#define ML_ERROR(...) ml_log(ML_LOG_ERROR, __VA_ARGS__)

#endif
