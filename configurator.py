"""Strict configuration: config files (Python) then --key=value overrides, then what each setting accepts.

Every script declares its settings as plain module globals with a default, and what each accepts as
the variable's annotation, next to the default:

    learning_rate: Range(0, lo_open=True) = 6e-4    # a float > 0
    lr_schedule: OneOf('cosine', 'wsd') = 'cosine'
    compile: bool = False
    out_dir: Text('folder for runs') = 'out'        # free text: checked where it is used
    RULES = [('min_lr <= learning_rate', 'the schedule decays down to min_lr')]   # relations, optional

then calls

    config = configurator.configure(globals())

which executes the config files named on the command line (in order), applies `--key=value`
(parsed with ast.literal_eval; a bare word is a string), checks every key and type against the
defaults, and then every value against its declaration and every rule, all before the script does
anything else. Config files are Python on purpose (like nanoGPT's): only run ones you trust.
Command-line values are never executed. tests/test_settings.py walks every script's declarations and
feeds each setting an invalid value made from them (`invalid_value`).

A user mistake raises UserError; `main()` wrappers turn it into one line on stderr and exit code 2.
"""
import ast
import difflib
import math
import os
import re
import sys
import traceback


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


# ----------------------------------------------------------------------------- what a setting accepts
# A declaration is the setting's annotation. Each kind answers three questions: is this value accepted
# (`ok`), how to say what is accepted (`describe`, used in the error line), and a value it can never
# accept (`invalid`, used by the generated test). The type is checked first, from the default.

class Range:
    """A number (int or float, as the default) in [lo, hi]; lo_open/hi_open exclude the ends; `also` lists
    extra values with a meaning of their own (e.g. -1 = 'all')."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, also=()):
        self.lo, self.hi, self.lo_open, self.hi_open, self.also = lo, hi, lo_open, hi_open, tuple(also)

    def ok(self, v):
        if v in self.also:
            return True
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or not (v > self.hi or (self.hi_open and v == self.hi))

    def describe(self):
        if self.lo is not None and self.hi is not None:
            s = f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            s = f"a number {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            s = f"a number {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            s = "a finite number"
        return s + (f" (or {', '.join(map(repr, self.also))})" if self.also else '')

    def invalid(self, default):
        if self.lo is not None:  # just below the bottom (or at an open bottom), kept to the default's type
            v = self.lo if self.lo_open else self.lo - (1 if isinstance(default, int) else abs(self.lo) * 0.5 or 0.5)
        elif self.hi is not None:
            v = self.hi if self.hi_open else self.hi + (1 if isinstance(default, int) else abs(self.hi) * 0.5 or 0.5)
        else:
            return float('nan') if isinstance(default, float) else None
        while v in self.also:
            v -= 1
        return int(v) if isinstance(default, int) and not isinstance(default, bool) else float(v)


class OneOf:
    """One of a fixed list of values (strings, or numbers)."""

    def __init__(self, *choices):
        self.choices = tuple(choices[0]) if len(choices) == 1 and isinstance(choices[0], (list, tuple)) else choices

    def ok(self, v):
        return v in self.choices

    def describe(self):
        return "one of " + ', '.join(repr(c) for c in self.choices)

    def invalid(self, default):
        return 'no_such_choice' if isinstance(default, str) else max(self.choices) + 1


class Match:
    """A string matching a regular expression (the whole string); `what` says it in words."""

    def __init__(self, pattern, what):
        self.pattern, self.what = pattern, what

    def ok(self, v):
        return re.fullmatch(self.pattern, v) is not None

    def describe(self):
        return self.what

    def invalid(self, default):
        return 'no such value!'


class Text:
    """Free text (a path, a prompt, a name): any string; the script checks it where it is used (a path that
    must exist, a name that must be known). `what` says what it is."""

    def __init__(self, what):
        self.what = what

    def ok(self, v):
        return True

    def describe(self):
        return self.what

    def invalid(self, default):
        return None  # any string is accepted here; the use site checks it


class Each:
    """A list whose items each satisfy `item` (a Range, OneOf, Match or Text), with at least min_len items."""

    def __init__(self, item, min_len=0):
        self.item, self.min_len = item, min_len

    def ok(self, v):
        return len(v) >= self.min_len and all(not isinstance(x, bool) and isinstance(x, (int, float, str))
                                               and _item_ok(self.item, x) for x in v)

    def describe(self):
        return (f"a list of {self.min_len}+ items, each " if self.min_len else "a list, each item ") + self.item.describe()

    def invalid(self, default):
        x = self.item.invalid(default[0] if default else (0 if isinstance(self.item, Range) else ''))
        return [x] if x is not None else ([] if self.min_len else None)


def _item_ok(spec, x):
    if isinstance(spec, Each):
        return isinstance(x, (list, tuple)) and spec.ok(x)
    if isinstance(spec, Range):
        return isinstance(x, (int, float)) and spec.ok(x)
    if isinstance(spec, (Match, Text)):
        return isinstance(x, str) and spec.ok(x)
    return spec.ok(x)


def declarations(defaults):
    """{setting: spec} of a script's globals(): the annotations of its module globals (bool -> accepts True/False)."""
    ann = defaults.get('__annotations__')
    if ann is None and defaults.get('__name__') in sys.modules:  # Python >= 3.14 evaluates module annotations lazily
        ann = getattr(sys.modules[defaults['__name__']], '__annotations__', {})
    return dict(ann or {})


def invalid_value(spec, default):
    """A value `spec` never accepts, of the default's type where one exists (None: free text, any string goes).
    For the generated test: bool settings get a non-bool, which the type check refuses."""
    if spec is bool:
        return 'maybe'
    return spec.invalid(default)


def check_declared(defaults, cfg):
    """Every setting against its declaration, then the script's RULES; one UserError naming the first bad one."""
    decl = declarations(defaults)
    for key, value in cfg.items():
        spec = decl.get(key)
        if spec is None or spec is bool or value is None:
            continue
        if not _item_ok(spec, value):
            raise UserError(f"--{key}={value!r} is not accepted: {key} takes {spec.describe()}")
    for rule in defaults.get('RULES', ()):
        expr, why = rule
        try:
            good = eval(expr, {'__builtins__': {}}, dict(cfg))  # only the settings' names are visible
        except Exception as e:
            raise RuntimeError(f"rule {expr!r} cannot be evaluated: {e}")  # a bug in the script, not the user's
        if not good:
            names = sorted({n.id for n in ast.walk(ast.parse(expr)) if isinstance(n, ast.Name) and n.id in cfg})
            got = ', '.join(f"{n}={cfg[n]!r}" for n in names)
            raise UserError(f"settings conflict ({got}): needs {expr} ({why})")


def _nearest(key, known):
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _settable(defaults):
    # ALL_CAPS names are module constants, not settings
    return {k: v for k, v in defaults.items()
            if not k.startswith('_') and not k.isupper() and isinstance(v, (int, float, str, bool, list, tuple, dict, type(None)))}


def check_type(key, value, default):
    """Value must have the default's type (int accepted for float, list/tuple interchangeable)."""
    if default is None:
        return value
    if value is None:
        raise UserError(f"--{key} expects a {type(default).__name__}, got None")
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
            run_config_file(path, scope)
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
    cfg = {k: defaults[k] for k in _settable(defaults)}
    check_declared(defaults, cfg)
    return cfg


def run_config_file(path, scope):
    """Execute a config file in `scope`; a syntax error or an exception in it is one line with file and line."""
    with open(path) as f:
        code = f.read()
    try:
        exec(compile(code, path, 'exec'), scope)
    except SyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: syntax error in config file: {e.msg}; fix that line") from None
    except Exception as e:
        line = next((fr.lineno for fr in reversed(traceback.extract_tb(e.__traceback__)) if fr.filename == path), '?')
        raise UserError(f"{path}:{line}: config file raised {type(e).__name__}: {e}; fix that line") from None
