/* Subcommands of the mesh-llm binary. Each takes the arguments after its
 * name (argv[0] is the subcommand name) and returns the process exit code. */
#ifndef APP_H
#define APP_H

int app_cmd_serve(int argc, char **argv);     /* default: mesh-llm [--model F] ... */
int app_cmd_gguf_info(int argc, char **argv); /* mesh-llm gguf-info FILE */
int app_cmd_tokenize(int argc, char **argv);  /* mesh-llm tokenize --model F ... */
int app_cmd_generate(int argc, char **argv);  /* mesh-llm generate --model F ... */
int app_cmd_bench(int argc, char **argv);     /* mesh-llm bench --model F ... */

#endif
