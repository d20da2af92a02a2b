/* Error codes shared by every module, and a per-thread "last error" message.
 *
 * Functions return 0 on success or a negative ML_ERR_* code. Where the code
 * alone would not tell a user what went wrong (a bad byte in a file, a value
 * over a limit), the failing function also records a message with
 * ml_error(), which says what, where and the limit. Callers show it with
 * ml_last_error(). The message is thread-local, so threads never see each
 * other's errors. */
#ifndef ML_ERR_H
#define ML_ERR_H

enum ml_err {
	ML_OK = 0,
	ML_ERR_NOMEM = -1,       /* allocation failed */
	ML_ERR_IO = -2,          /* a system call failed (errno in the message) */
	ML_ERR_FORMAT = -3,      /* malformed untrusted input */
	ML_ERR_UNSUPPORTED = -4, /* valid but not supported (type, architecture) */
	ML_ERR_INVALID = -5,     /* bad argument or option */
	ML_ERR_INCOMPLETE = -6,  /* parser needs more bytes */
	ML_ERR_RANGE = -7,       /* a value exceeds a limit */
	ML_ERR_NOT_FOUND = -8,   /* key, tensor, file or route absent */
	ML_ERR_BUSY = -9,        /* no free slot; retry later */
	ML_ERR_CLOSED = -10,     /* peer or stream closed */
	ML_ERR_TIMEOUT = -11,
	ML_ERR_AUTH = -12,       /* authentication failed */
	ML_ERR_PROTO = -13,      /* protocol violation by a peer */
	ML_ERR_CANCELLED = -14,  /* the request was cancelled */
};

/* Short fixed description of |code|; never NULL. */
const char *ml_strerror(int code);

/* Formats a message into this thread's error buffer (truncated at 512
 * bytes), logs it at debug level and returns |code| so callers can write
 * `return ml_error(ML_ERR_FORMAT, "%s: ...", __func__, ...)`. */
int ml_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread by ml_error(), or "" if none.
 * Valid until the next ml_error() call on this thread. */
const char *ml_last_error(void);

/* Clears this thread's message. */
void ml_error_clear(void);

#endif
