/* Error codes and the per-thread last-error message. */
#include "base/ml_err.h"
#include "base/ml_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[512];

const char *ml_strerror(int code)
{
	switch (code) {
	case ML_OK: return "success";
	case ML_ERR_NOMEM: return "out of memory";
	case ML_ERR_IO: return "I/O error";
	case ML_ERR_FORMAT: return "malformed input";
	case ML_ERR_UNSUPPORTED: return "unsupported";
	case ML_ERR_INVALID: return "invalid argument";
	case ML_ERR_INCOMPLETE: return "incomplete input";
	case ML_ERR_RANGE: return "value out of range";
	case ML_ERR_NOT_FOUND: return "not found";
	case ML_ERR_BUSY: return "busy";
	case ML_ERR_CLOSED: return "closed";
	case ML_ERR_TIMEOUT: return "timed out";
	case ML_ERR_AUTH: return "authentication failed";
	case ML_ERR_PROTO: return "protocol error";
	case ML_ERR_CANCELLED: return "cancelled";
	}
	return "unknown error";
}

int ml_error(int code, const char *fmt, ...)
{
	/* format into a scratch buffer first: callers often wrap the previous
	 * message, passing ml_last_error() itself as an argument */
	char msg[sizeof(err_buf)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(err_buf, msg, sizeof(err_buf));
	ml_log(ML_LOG_DEBUG, "error: %s", err_buf);
	return code;
}

const char *ml_last_error(void)
{
	return err_buf;
}

void ml_error_clear(void)
{
	err_buf[0] = '\0';
}
