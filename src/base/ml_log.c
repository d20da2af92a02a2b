/* Logging sink: level filter plus a replaceable line consumer. */
#include "base/ml_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ml_log_sink log_sink;
static void *log_user;
static int log_level = -1; /* -1: not yet read from the environment */

static void log_stderr(enum ml_log_level level, const char *line, void *user)
{
	static const char *tags[] = {"debug", "info", "warn", "error"};
	struct timespec ts;
	struct tm tm;
	(void)user;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
		ts.tv_nsec / 1000000, tags[level], line);
}

void ml_log_set_sink(ml_log_sink sink, void *user)
{
	log_sink = sink;
	log_user = user;
}

void ml_log_set_level(enum ml_log_level level)
{
	log_level = (int)level;
}

enum ml_log_level ml_log_get_level(void)
{
	if (log_level < 0) {
		const char *env = getenv("MESH_LLM_LOG");
		static const char *names[] = {"debug", "info", "warn", "error", "none"};
		log_level = ML_LOG_INFO;
		for (int i = 0; env && i < 5; i++)
			if (strcmp(env, names[i]) == 0)
				log_level = i;
	}
	return (enum ml_log_level)log_level;
}

void ml_log(enum ml_log_level level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	if (level < ml_log_get_level() || level >= ML_LOG_NONE)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	(log_sink ? log_sink : log_stderr)(level, line, log_user);
}
