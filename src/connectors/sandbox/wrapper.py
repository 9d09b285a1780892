# Runs the cell read on stdin like a notebook does, inside the sandbox (`python3 -I -u -c`).
# Exit codes tell the parent which limit an uncaught exception came from: 3 memory, 4 file
# size, 5 processes; 1 any other exception.
# `_ast` (built in) rather than `ast`, and `traceback` only on an error: together they were
# half of the sandbox's start-up cost.
import _ast
import errno
import os
import sys

PyCF_ONLY_AST = 0x400

MAIN_PID = os.getpid()


def exit_code(exc):
    if isinstance(exc, MemoryError):
        return 3
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return 4
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return 5
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return 5
    return 1


def save_figures():
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    index = 0
    for number in pyplot.get_fignums():
        while os.path.exists(f"figure_{index}.png"):
            index += 1
        pyplot.figure(number).savefig(f"figure_{index}.png")
        index += 1
    pyplot.close("all")


def print_exception(source, exc, tb):
    import linecache
    import traceback

    # Tracebacks show the cell's lines, as a notebook's do.
    linecache.cache["<cell>"] = (len(source), None, source.splitlines(True), "<cell>")
    traceback.print_exception(type(exc), exc, tb)


def run(source):
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        tree = compile(source, "<cell>", "exec", PyCF_ONLY_AST)
    except SyntaxError as exc:
        print_exception(source, exc, None)
        return 1
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    try:
        exec(compile(tree, "<cell>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), namespace)
            if value is not None:
                print(repr(value))
        return 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:
        # The first frame is this wrapper's own.
        print_exception(source, exc, exc.__traceback__.tb_next)
        return exit_code(exc)


def main():
    source = sys.stdin.read()
    sys.stdin = open(os.devnull)
    # Files the cell wrote earlier are importable, as in a notebook started in its folder.
    sys.path.insert(0, os.getcwd())
    code = run(source)
    # A process the cell forked runs this too: only the cell's own process saves figures.
    if os.getpid() == MAIN_PID:
        try:
            save_figures()
        except BaseException as exc:
            print_exception(source, exc, exc.__traceback__)
            code = code or exit_code(exc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


main()
