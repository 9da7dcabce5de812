"""Every string the scan console shows, in one catalogue per language.

Field staff at Katanga sites read French first; management reads English; Swahili is
widely spoken (DOMAIN.md "Conditions"). A language is one dict here: add ``"sw"`` with
the same keys and placeholders (``test_scan_session`` checks every language against
English) and it is selectable with ``--lang sw`` or ``LANG=sw_CD.UTF-8``.

Keys fall in four groups: ``banner.*`` (one short word drawn in big letters; ASCII
letters, digits and ``!?-`` only, accents are dropped for the big font), ``cmd.*`` (the
one-letter commands of that language; the English letters always work too),
``screen.*`` (prompts and labels) and ``msg.*`` (outcomes, ``str.format`` fields).
Lines are kept short: the console must fit a 40x12 handheld screen, and anything
longer is wrapped or cut by the layout, never printed past the edge.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Catalogue", "choose_language"]

DEFAULT_LANGUAGE = "en"

_EN: dict[str, str] = {
    "banner.ok": "OK",
    "banner.error": "ERROR",
    "banner.duplicate": "DUPLICATE",
    "banner.void": "VOID",
    "banner.scale": "SCALE",
    "banner.lot": "LOT",
    "banner.info": "INFO",
    "cmd.lot": "l",
    "cmd.void": "v",
    "cmd.counts": "c",
    "cmd.help": "h",
    "cmd.quit": "q",
    "cmd.yes": "y",
    "cmd.skip": "s",
    "cmd.cancel": "x",
    "screen.no_lot": "NO LOT",
    "screen.status": "LOT {lot} | {count} today",
    "screen.hint": "l lot v void c count h help q quit",
    "screen.need_lot": "Scan or type the LOT id",
    "screen.ready": "Scan a seal",
    "screen.lot_entry": "New lot: scan or type it",
    "screen.lot_entry_cancel": "(empty line = keep {lot})",
    "screen.weighing": "Put bag {seal} on the scale",
    "screen.weight_live": "{kg} kg  {state}",
    "screen.weight_none": "no reading yet",
    "screen.weight_stable": "stable",
    "screen.weight_unstable": "settling...",
    "screen.weight_empty": "scale empty",
    "screen.weight_overload": "OVERLOAD",
    "screen.weight_not_emptied": "remove the last bag first",
    "screen.scale_down": "scale not connected",
    "screen.weighing_keys": "s = no weight, x = cancel, or type kg",
    "screen.confirm_void": "Void bag {seal} in lot {lot}?",
    "screen.confirm_keys": "y = yes, anything else = no",
    "screen.recording": "Recording...",
    "msg.bag_ok": "{seal}",
    "msg.bag_ok_lot": "-> lot {lot}: bag {count} today",
    "msg.bag_ok_mass": "{kg} kg",
    "msg.bag_ok_mass_manual": "{kg} kg (typed)",
    "msg.bag_ok_no_mass": "no weight",
    "msg.bad_check_digit": "Wrong check digit: misread label",
    "msg.bad_code": "Not a valid code",
    "msg.not_ascii": "Seal codes must be plain ASCII",
    "msg.duplicate": "{seal} ALREADY SCANNED",
    "msg.duplicate_where": "lot {lot} at {time}",
    "msg.duplicate_hint": "Not recorded. Void the old one first.",
    "msg.no_lot_first": "Scan the LOT first",
    "msg.bad_lot": "Not a lot id: {lot}",
    "msg.bad_lot_rule": "1-64 of A-Z a-z 0-9 . _ -",
    "msg.lot_set": "Lot {lot}",
    "msg.lot_count": "{count} bag(s) today",
    "msg.nothing_to_void": "Nothing to void",
    "msg.void_cancelled": "Void cancelled",
    "msg.voided": "{seal} removed from lot {lot}",
    "msg.counts_title": "Today, per lot:",
    "msg.counts_line": "{lot}: {count} bag(s) {kg}",
    "msg.counts_none": "No bags today",
    "msg.not_recorded": "NOT recorded:",
    "msg.finish_bag": "Finish bag {seal} first",
    "msg.weight_taken": "stable weight {kg} kg",
    "msg.bad_weight": "Not a weight: {text}",
    "msg.bag_cancelled": "Bag {seal} cancelled, not recorded",
    "msg.recovered": "{count} unfinished record(s) voided",
    "msg.recovered_rescan": "rescan: {seals}",
    "msg.unknown_command": "Unknown command {text}",
    "msg.help_lot": "l  switch lot (or scan a lot label)",
    "msg.help_void": "v  void the last bag",
    "msg.help_counts": "c  bags per lot today",
    "msg.help_quit": "q  quit",
    "msg.scanner_error": "Scanner: {reason}",
    "msg.rescan": "Scan the label again",
    "msg.weight_as_seal": "{text} looks like a weight",
    "msg.weight_as_seal_scale": "Scan the SEAL first, then weigh",
    "msg.weight_as_seal_no_scale": "No weighing here: scan the SEAL",
    "msg.type_kg": "Type kg, e.g. 1500.5",
    "msg.bag_too_light": "{kg} kg: too light for a bag",
    "msg.bag_too_heavy": "{kg} kg: too heavy for a bag",
    "msg.bag_range": "A bag is {lo} to {hi} kg",
    "msg.weigh_again": "Check the scale, weigh again",
    "msg.type_again": "Type the weight again in kg",
    "msg.counts_refused": "Refused this session: {count}",
    "msg.bye": "Bye",
}

_FR: dict[str, str] = {
    "banner.ok": "OK",
    "banner.error": "ERREUR",
    "banner.duplicate": "DOUBLON",
    "banner.void": "ANNULE",
    "banner.scale": "BALANCE",
    "banner.lot": "LOT",
    "banner.info": "INFO",
    "cmd.lot": "l",
    "cmd.void": "a",
    "cmd.counts": "c",
    "cmd.help": "?",
    "cmd.quit": "q",
    "cmd.yes": "o",
    "cmd.skip": "s",
    "cmd.cancel": "x",
    "screen.no_lot": "PAS DE LOT",
    "screen.status": "LOT {lot} | {count} auj.",
    "screen.hint": "l lot a annuler c compte ? aide q fin",
    "screen.need_lot": "Scannez ou tapez le n° de LOT",
    "screen.ready": "Scannez un scellé",
    "screen.lot_entry": "Nouveau lot : scannez ou tapez",
    "screen.lot_entry_cancel": "(ligne vide = garder {lot})",
    "screen.weighing": "Posez le sac {seal} sur la balance",
    "screen.weight_live": "{kg} kg  {state}",
    "screen.weight_none": "pas encore de lecture",
    "screen.weight_stable": "stable",
    "screen.weight_unstable": "stabilisation...",
    "screen.weight_empty": "balance vide",
    "screen.weight_overload": "SURCHARGE",
    "screen.weight_not_emptied": "retirez d'abord le sac précédent",
    "screen.scale_down": "balance non connectée",
    "screen.weighing_keys": "s = sans poids, x = annuler, ou kg",
    "screen.confirm_void": "Annuler le sac {seal} du lot {lot} ?",
    "screen.confirm_keys": "o = oui, autre = non",
    "screen.recording": "Enregistrement...",
    "msg.bag_ok": "{seal}",
    "msg.bag_ok_lot": "-> lot {lot} : sac {count} auj.",
    "msg.bag_ok_mass": "{kg} kg",
    "msg.bag_ok_mass_manual": "{kg} kg (saisi)",
    "msg.bag_ok_no_mass": "sans poids",
    "msg.bad_check_digit": "Clé de contrôle fausse : mal lu",
    "msg.bad_code": "Code non valide",
    "msg.not_ascii": "Le scellé doit être en ASCII simple",
    "msg.duplicate": "{seal} DÉJÀ SCANNÉ",
    "msg.duplicate_where": "lot {lot} à {time}",
    "msg.duplicate_hint": "Non enregistré. Annulez l'ancien.",
    "msg.no_lot_first": "Scannez d'abord le LOT",
    "msg.bad_lot": "Pas un n° de lot : {lot}",
    "msg.bad_lot_rule": "1-64 de A-Z a-z 0-9 . _ -",
    "msg.lot_set": "Lot {lot}",
    "msg.lot_count": "{count} sac(s) aujourd'hui",
    "msg.nothing_to_void": "Rien à annuler",
    "msg.void_cancelled": "Annulation abandonnée",
    "msg.voided": "{seal} retiré du lot {lot}",
    "msg.counts_title": "Aujourd'hui, par lot :",
    "msg.counts_line": "{lot} : {count} sac(s) {kg}",
    "msg.counts_none": "Aucun sac aujourd'hui",
    "msg.not_recorded": "NON enregistré :",
    "msg.finish_bag": "Terminez d'abord le sac {seal}",
    "msg.weight_taken": "poids stable {kg} kg",
    "msg.bad_weight": "Pas un poids : {text}",
    "msg.bag_cancelled": "Sac {seal} annulé, non enregistré",
    "msg.recovered": "{count} enregistrement(s) inachevé(s) annulé(s)",
    "msg.recovered_rescan": "à rescanner : {seals}",
    "msg.unknown_command": "Commande inconnue {text}",
    "msg.help_lot": "l  changer de lot (ou scanner le lot)",
    "msg.help_void": "a  annuler le dernier sac",
    "msg.help_counts": "c  sacs par lot aujourd'hui",
    "msg.help_quit": "q  quitter",
    "msg.scanner_error": "Lecteur : {reason}",
    "msg.rescan": "Rescannez l'étiquette",
    "msg.weight_as_seal": "{text} ressemble à un poids",
    "msg.weight_as_seal_scale": "Scannez d'abord le SCELLÉ, puis pesez",
    "msg.weight_as_seal_no_scale": "Pas de pesée ici : scannez le SCELLÉ",
    "msg.type_kg": "Tapez des kg, ex. 1500,5",
    "msg.bag_too_light": "{kg} kg : trop léger pour un sac",
    "msg.bag_too_heavy": "{kg} kg : trop lourd pour un sac",
    "msg.bag_range": "Un sac fait {lo} à {hi} kg",
    "msg.weigh_again": "Vérifiez la balance, repesez",
    "msg.type_again": "Retapez le poids en kg",
    "msg.counts_refused": "Refusés cette session : {count}",
    "msg.bye": "Au revoir",
}

LANGUAGES: dict[str, Mapping[str, str]] = {"en": _EN, "fr": _FR}

# The English command letters work in every language: a supervisor helping at a
# French station, or a scanner programmed with English command barcodes, still works.
_COMMANDS = ("lot", "void", "counts", "help", "quit", "yes", "skip", "cancel")


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Catalogue:
    """The strings of one language, with English as the fallback for a missing key."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        if language not in LANGUAGES:
            known = ", ".join(sorted(LANGUAGES))
            raise ValueError(f"no messages in language {language!r} (known: {known})")
        self.language = language
        self._strings = LANGUAGES[language]

    def __call__(self, key: str, **fields: object) -> str:
        template = self._strings.get(key) or _EN[key]
        return template.format(**fields) if fields else template

    def command(self, text: str) -> str | None:
        """The command a typed word means (``"void"``, ...), or None."""
        word = text.strip().lower()
        if not word:
            return None
        for name in _COMMANDS:
            if word in (self._strings.get(f"cmd.{name}"), _EN[f"cmd.{name}"]):
                return name
        # "?" means help everywhere; "oui"/"yes" in full are accepted for confirmations.
        if word == "?":
            return "help"
        if word in ("yes", "oui"):
            return "yes"
        return None


def choose_language(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--lang`` wins; else the POSIX locale variables in gettext's order; else English."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        for candidate in value.split(":"):  # LANGUAGE may list several: "fr_CD:en"
            code = candidate.split("_")[0].split(".")[0].lower()
            if code in LANGUAGES:
                return code
        if value and var != "LANGUAGE":
            break  # the first locale variable that is set decides (POSIX precedence)
    return DEFAULT_LANGUAGE
