/* Local machine state the mesh needs: the node key file and the models on
 * disk. */
#ifndef MESH_LOCAL_H
#define MESH_LOCAL_H

#include "mesh/mesh_gossip.h"
#include "net/net_ident.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the node key lives: |override| when non-NULL, else
 * $HOME/.mesh-llm/key. Returns 0, ML_ERR_NOT_FOUND ($HOME unset) or
 * ML_ERR_RANGE (|cap| too small). */
int mesh_ident_path(char *out, size_t cap, const char *override);
/* The node identity: with |ephemeral| a fresh key that is not saved (lite
 * clients), else the key file at mesh_ident_path(|override|), created with
 * mode 0600 (and its directory with 0700) on first run. |*created| (may be
 * NULL) tells whether a new key was made. Returns 0 or a negative
 * ML_ERR_*. */
int mesh_ident_load(struct net_ident *id, const char *override, bool ephemeral, bool *created);

/* The mesh a node started, kept across restarts: loads the mesh id and
 * secret from |path|, or creates a fresh random pair there (mode 0600,
 * written to a temporary file and renamed; the directory is created 0700).
 * |*created| (may be NULL) says which. File format: the line
 * "mesh-llm mesh v1", then the id and the secret in hex, one per line.
 * Returns 0, ML_ERR_FORMAT (bad file), ML_ERR_IO. */
int mesh_secret_load_or_create(const char *path, uint8_t mesh_id[16], uint8_t secret[32],
                               bool *created);

/* Lists the GGUF files under |dir| (NULL = $HOME/.models), two directory
 * levels deep: name = path relative to |dir|, bytes = file size. Split
 * files ("-00002-of-00003.gguf") other than the first part are skipped.
 * Writes at most |cap| entries sorted by name and returns how many (0 when
 * the directory does not exist). */
int mesh_models_scan(const char *dir, struct mesh_model_info *out, size_t cap);

#endif
