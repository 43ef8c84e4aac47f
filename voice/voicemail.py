"""An outbound call answered by a machine: what the agent says into a mailbox, and when.

On a machine the conversation stops: what the machine says (its greeting) reaches no model
(:class:`VoicemailMute`), and what was captured is discarded. With ``leave_message`` the agent
says :func:`message_text` once the greeting has ended, then hangs up.
"""

from __future__ import annotations

from collections.abc import Callable

from pipecat.frames.frames import Frame
from pipecat.turns.user_mute.base_user_mute_strategy import BaseUserMuteStrategy

from voice.phrasebook import phrases

#: After a result that says a machine answered but not when its greeting ends (Sinch's
#: synchronous AMD), the pause before the message: time for the greeting's beep.
PAUSE_S = 2.0
#: How long a machine's greeting may take before the message is left anyway (a carrier whose
#: detector reports the end only when it hears a beep sends nothing without one).
GREETING_WAIT_S = 30.0

#: Detection results that no message can be left on (Twilio's ``fax``): the call is hung up.
NO_MESSAGE_RESULTS = frozenset({"fax"})


def action_for(action: str, result: str) -> str:
    """What to do on a machine: the call's ``action``, but ``hang_up`` on a fax."""
    return "hang_up" if result in NO_MESSAGE_RESULTS else action


def message_text(language: str, message: str) -> str:
    """What the agent says into a mailbox: the AI disclosure, then the tenant's message."""
    disclosure = phrases(language).say.voicemail_disclosure
    return f"{disclosure} {message.strip()}"


class VoicemailMute(BaseUserMuteStrategy):
    """Mutes the caller's side once a machine answered: its greeting is not a turn."""

    def __init__(self, machine: Callable[[], bool]) -> None:
        """Muted whenever ``machine()`` says a machine answered."""
        super().__init__()
        self._machine = machine

    async def process_frame(self, frame: Frame) -> bool:
        """Whether the caller's frames are muted now."""
        return self._machine()
