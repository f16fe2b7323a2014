"""An Ollama `Modelfile` for an exported generation version, and the chat template in
Ollama's own (Go template) form when it can be derived from the tokenizer for certain.

Ollama's `TEMPLATE` is a Go template, the tokenizer's chat template is Jinja: no general
translation exists. What can be derived reliably is the common shape where every message
is wrapped the same way for its role (`prefix + content + suffix`), after a fixed head and
before a generation prompt: ChatML (SmolLM2, Qwen), Llama 3, Gemma and most instruct
models. The pieces are read off the tokenizer's own renderings of a few conversations, and
kept only if they reproduce its rendering of another conversation exactly. Otherwise the
Modelfile has no TEMPLATE and Ollama takes the template from the model it imports (it
detects it from the tokenizer's chat template metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
_PROBE = {"system": "QZSYSQZ", "user": "QZUSRQZ", "assistant": "QZASTQZ"}


@dataclass(frozen=True)
class ChatFormat:
    """A chat template as pieces: head, per-role (prefix, suffix), generation prompt, and
    the system prompt the template adds when a conversation has none."""

    head: str
    wraps: dict[str, tuple[str, str]]
    generation: str
    default_system: str | None

    def render(self, messages: list[dict[str, str]], generation: bool = True) -> str:
        """What this format makes of `messages`: the check against the tokenizer's own."""
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text = self.head
        for message in messages:
            prefix, suffix = self.wraps[message["role"]]
            text += prefix + message["content"] + suffix
        return text + (self.generation if generation else "")

    def go_template(self, bos_token: str | None = None) -> str:
        """The same format as an Ollama TEMPLATE over `.Messages`. A leading BOS token is
        left out: the runtime adds it, as it does for every prompt (twice hurts)."""
        head = self.head
        if bos_token and head.startswith(bos_token):
            head = head[len(bos_token) :]
        branches = ""
        for i, (role, (prefix, suffix)) in enumerate(self.wraps.items()):
            keyword = "if" if i == 0 else "else if"
            branches += "{{ " + keyword + ' eq .Role "' + role + '" }}'
            branches += prefix + "{{ .Content }}" + suffix
        return head + "{{ range .Messages }}" + branches + "{{ end }}{{ end }}" + self.generation

    @property
    def stop(self) -> str | None:
        """The text that ends an assistant turn, which Ollama should stop at."""
        return self.wraps["assistant"][1].strip() or None


def derive_chat_format(tokenizer: Any) -> ChatFormat | None:
    """The tokenizer's chat template as a `ChatFormat`, or None when it is not of the
    per-role wrapping shape (or renders differently from what the pieces predict)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        found = _pieces(tokenizer)
        if found is not None and _agrees(found, tokenizer):
            return found
    except Exception:  # a template that refuses a probe conversation (role order, system)
        return None
    return None


def _render(tokenizer: Any, roles: str, generation: bool) -> str:
    """The tokenizer's rendering of a probe conversation, e.g. "sua" = system, user,
    assistant; the n-th message of a role says the probe word plus n."""
    names = {"s": "system", "u": "user", "a": "assistant"}
    messages = [
        {"role": names[r], "content": _PROBE[names[r]] + str(roles[:i].count(r))}
        for i, r in enumerate(roles)
    ]
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation
    )
    return text


def _split(block: str, content: str) -> tuple[str, str] | None:
    if block.count(content) != 1:
        return None
    prefix, _, suffix = block.partition(content)
    return prefix, suffix


def _pieces(tokenizer: Any) -> ChatFormat | None:
    """Read the pieces off renderings that differ by one message each."""
    u, ua, uau = (_render(tokenizer, r, False) for r in ("u", "ua", "uau"))
    u_gen, su = _render(tokenizer, "u", True), _render(tokenizer, "su", False)
    if not (ua.startswith(u) and uau.startswith(ua) and u_gen.startswith(u)):
        return None
    assistant = _split(ua[len(u) :], _PROBE["assistant"] + "0")
    user = _split(uau[len(ua) :], _PROBE["user"] + "1")
    if assistant is None or user is None:
        return None
    first_user = user[0] + _PROBE["user"] + "0" + user[1]
    if not (u.endswith(first_user) and su.endswith(first_user)):
        return None
    bare_head = u[: -len(first_user)]  # the head, and a default system block if any
    system = _split(su[: -len(first_user)], _PROBE["system"] + "0")
    if system is None:
        return None
    head_and_prefix, system_suffix = system
    if head_and_prefix.startswith(bare_head):  # no default system prompt
        head, default = bare_head, None
    elif bare_head.startswith(head_and_prefix) and bare_head.endswith(system_suffix):
        head = _head_before_system(head_and_prefix, user[0])
        end = len(bare_head) - len(system_suffix)
        default = bare_head[len(head_and_prefix) : end]
    else:
        return None
    return ChatFormat(
        head=head,
        wraps={
            "system": (head_and_prefix[len(head) :], system_suffix),
            "user": user,
            "assistant": assistant,
        },
        generation=u_gen[len(u) :],
        default_system=default,
    )


def _head_before_system(joined: str, user_prefix: str) -> str:
    """Split head + system prefix when both always come together (the template adds a
    system message when there is none): the system prefix is taken to be the user's with
    the role's name changed ("<|im_start|>user\n" -> "<|im_start|>system\n"); no head
    when it is not."""
    guess = user_prefix.replace("user", "system")
    if "user" in user_prefix and joined.endswith(guess):
        return joined[: -len(guess)]
    return ""


def _agrees(found: ChatFormat, tokenizer: Any) -> bool:
    """Whether the pieces reproduce conversations they were not read from."""
    for roles in ("suauaua", "uaua"):
        for generation in (True, False):
            names = {"s": "system", "u": "user", "a": "assistant"}
            messages = [
                {"role": names[r], "content": f"check {i} {names[r]} text"}
                for i, r in enumerate(roles)
            ]
            expected = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation
            )
            if found.render(messages, generation) != expected:
                return False
    return True


def modelfile(
    source: str,
    adapter: str | None,
    chat: ChatFormat | None,
    *,
    bos_token: str | None = None,
    note: str = "written by fineloop",
) -> str:
    """The Modelfile text: FROM the model (the base of an adapter), ADAPTER the adapter,
    then the chat TEMPLATE, SYSTEM and stop parameter when `chat` is known."""
    lines = [f"# {note}", f"FROM {source}"]
    if adapter is not None:
        lines.append(f"ADAPTER {adapter}")
    if chat is not None and all(_quotable(p) for p in _texts(chat)):
        lines.append(f'TEMPLATE """{chat.go_template(bos_token)}"""')
        if chat.default_system is not None:
            lines.append(f'SYSTEM """{chat.default_system}"""')
        if chat.stop is not None and '"' not in chat.stop:
            lines.append(f'PARAMETER stop "{chat.stop}"')
    else:
        lines.append(
            "# no TEMPLATE: the chat template could not be derived from the tokenizer with "
            "certainty; Ollama reads it from the imported model's metadata"
        )
    return "\n".join(lines) + "\n"


def _texts(chat: ChatFormat) -> list[str]:
    pieces = [chat.head, chat.generation, chat.default_system or ""]
    return pieces + [p for pair in chat.wraps.values() for p in pair]


def _quotable(text: str) -> bool:
    """Whether a piece can sit inside the Modelfile's triple quotes and a Go template."""
    return '"""' not in text and "{{" not in text and "}}" not in text
