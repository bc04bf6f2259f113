"""Strict configuration: config files (Python) then --key=value overrides.

Every script declares its settings as plain module globals with defaults, then calls

    config = configurator.configure(globals())

which executes the config files named on the command line (in order), applies `--key=value`
(parsed with ast.literal_eval; a bare word is a string) and checks every key and type against the
defaults. Config files are Python on purpose (like nanoGPT's): only run ones you trust. Command-line
values are never executed.

A user mistake raises UserError; `main()` wrappers turn it into one line on stderr and exit code 2.
"""
import ast
import difflib
import os
import sys


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2, nothing written."""


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_main(fn, *args, **kwargs):
    """Run fn, turning a UserError into one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        fail(e)


def _nearest(key, known):
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _settable(defaults):
    # ALL_CAPS names are module constants, not settings
    return {k: v for k, v in defaults.items()
            if not k.startswith('_') and not k.isupper() and isinstance(v, (int, float, str, bool, list, tuple, dict, type(None)))}


def check_type(key, value, default):
    """Value must have the default's type (int accepted for float, list/tuple interchangeable)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"--{key} expects True or False, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"--{key} expects an int, got {value!r} ({type(value).__name__})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"--{key} expects a float, got {value!r} ({type(value).__name__})")
        return float(value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"--{key} expects a list like [1, 2], got {value!r}")
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise UserError(f"--{key} expects a {type(default).__name__}, got {value!r} ({type(value).__name__})")
    return value


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def resolve_config_file(arg):
    """A config argument is a path, or a problem name under config/."""
    if os.path.exists(arg):
        return arg
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config')
    cand = os.path.join(here, arg if arg.endswith('.py') else arg + '.py')
    if os.path.exists(cand):
        return cand
    names = sorted(f[:-3] for f in os.listdir(here) if f.endswith('.py')) if os.path.isdir(here) else []
    raise UserError(f"config file '{arg}' not found{_nearest(os.path.basename(arg).removesuffix('.py'), names)}; "
                    f"pass a path or one of: ./launcher.sh list")


def configure(defaults, argv=None):
    """Apply config files and --key=value to the dict `defaults` (a module's globals()) in place.

    Returns the resolved settings as a plain dict (what goes into config.json)."""
    argv = sys.argv[1:] if argv is None else argv
    known = _settable(defaults)
    for arg in argv:
        if arg.startswith('--'):
            if '=' not in arg:
                raise UserError(f"'{arg}' has no value; write --key=value")
            key, text = arg[2:].split('=', 1)
            if key not in known:
                raise UserError(f"unknown config key '{key}'{_nearest(key, list(known))}")
            value = check_type(key, parse_value(text), known[key])
        else:
            path = resolve_config_file(arg)
            scope = dict(defaults)
            with open(path) as f:
                code = f.read()
            exec(compile(code, path, 'exec'), scope)
            value = None
            for key, v in scope.items():
                if key.startswith('_') or key == '__builtins__' or (key in defaults and defaults[key] is v):
                    continue
                if key not in known:
                    if callable(v) or type(v).__name__ == 'module':
                        continue  # helpers and imports inside a config file are fine
                    raise UserError(f"{path}: unknown config key '{key}'{_nearest(key, list(known))}")
                defaults[key] = known[key] = check_type(key, v, known[key])
            continue
        defaults[key] = known[key] = value
    return {k: defaults[k] for k in _settable(defaults)}
