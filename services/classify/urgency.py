"""Urgency: how soon a human must answer, as a score 0..1, a level P1..P4 and the reasons.

The score is deliberately a readable formula rather than a model, so the front-line team can
see *why* a post was raised (the reasons travel with the event) and tune it:

    issue  = 0.45 * P(complaint) + 0.25 * P(negative)             (0 .. 0.70)
    intent = sum of matched intent weights, at most 0.40           (refund, outage, ...)
    sev    = 0.10 if the post is a complaint (P >= 0.5) of severity level 4 (blame), else 0
    core   = issue + intent + sev
    amp    = VIP 0.15 + reach (0.04 per decade of followers above 1k, at most 0.15)
             + waited (0.04 per hour the post waited before thirdring saw it, counted from
             15 minutes, at most 0.12), all scaled by min(1, core / 0.4) so a big account
             saying "thanks", or an old post with nothing wrong, is not raised
    score  = clip(core + amp, 0, 1)

Gate: a post that is not a complaint (P < 0.5) and whose sentiment is positive, or neutral
with no intent, is capped at 0.30, i.e. always P4.

Levels (seconds to first response per level live in the SLA policy, not here):
    P1 >= 0.80   e.g. a clear complaint about safety or legal action, or a VIP's outage
    P2 >= 0.60   a clear angry complaint, or a milder one with an intent
    P3 >= 0.35   a moderate complaint or negative post
    P4  < 0.35   everything else (no SLA target by default)

Intents are matched with multilingual keyword lists (en, it, et, es, fr, de, pt; matched on
lower-cased, accent-folded text so "tööta" and "toota" both hit) because they must work on
day one for languages without labelled data, and a keyword is an explainable reason.
``repeat`` (repeated contact: "third time I write", "still no answer", "ho già chiamato")
says the customer has tried before; it is about the customer, not a shared cause, so the
alert service never groups cases into an incident by it.

Time already waited is the time between the post's ``created_at`` and thirdring first seeing
it (``ingested_at``): polled sources and outages of a source deliver posts late, and the SLA
clock runs from ``created_at``, so a late post has less time left. The wait after ingestion
is the alert service's to track (its SLA clock and escalations). Backfilled history has no
such wait (the replay, not the customer, made it late).

Weights (defaults; every one can be overridden, see below):

    key               default  what it weighs
    complaint         0.45     x P(complaint)
    negative          0.25     x P(negative)
    intents.safety    0.30     keyword intent (sum of intents capped at intent_cap)
    intents.legal     0.20
    intents.outage    0.12
    intents.cancel    0.12
    intents.refund    0.10
    intents.repeat    0.08
    intent_cap        0.40     most the intents add together
    severity.4        0.10     complaint severity level (1-4) of a complaint; 1-3 add 0
    vip               0.15     VIP author, x min(1, core / 0.4)
    reach_per_decade  0.04     per decade of followers above 1k, x min(1, core / 0.4)
    reach_cap         0.15     most reach adds
    waited_per_hour   0.04     per hour waited before ingestion (from 15 min), x min(1, core / 0.4)
    waited_cap        0.12     most the wait adds

Overrides: ``$THIRDRING_URGENCY_WEIGHTS`` holds a JSON object, or the path of a JSON file,
with any of these keys, e.g. ``{"negative": 0.2, "intents": {"refund": 0.15},
"severity": {"3": 0.05}}``; unknown keys are an error. Thresholds and the gate are not
configurable here (they are tied to the SLA policy).

Contributions: besides the plain ``reasons`` (strings the alert service parses, e.g.
``intent:refund``), every result carries ``contributions``: one ``{"reason", "weight"}`` per
reason, in the same order and with the same string, giving what it added to the score (the
intent cap and the VIP/reach scaling already applied), followed where needed by
``other signals`` (P(complaint) / P(negative) / reach too small to be named as a reason) and
by negative entries for ``cap: not urgent`` (the gate) and ``cap: 1.0``, so the weights add
up to the score (to rounding).
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.durations import duration_text
from shared.events import Author, Priority

P1_THRESHOLD = 0.80
P2_THRESHOLD = 0.60
P3_THRESHOLD = 0.35
NOT_URGENT_CAP = 0.30

W_COMPLAINT = 0.45
W_NEGATIVE = 0.25
INTENT_CAP = 0.40
VIP_BOOST = 0.15
REACH_PER_DECADE = 0.04
REACH_CAP = 0.15
REACH_FLOOR = 1_000  # followers below this add nothing
REACH_REASON_MIN = 10_000  # followers from which "reach ..." is worth saying
AMP_FULL_AT = 0.40  # core score from which VIP/reach/waited count fully
WAITED_PER_HOUR = 0.04
WAITED_CAP = 0.12
WAITED_FLOOR_S = 15 * 60  # a stream's few seconds or a poll's few minutes are not a wait
SEVERITY_WEIGHTS: dict[int, float] = {4: 0.10}  # complaint severity level -> added weight
WEIGHTS_ENV = "THIRDRING_URGENCY_WEIGHTS"

# Weight of each intent in the score: safety first, then legal exposure, then lost service.
INTENT_WEIGHTS: dict[str, float] = {
    "safety": 0.30,
    "legal": 0.20,
    "outage": 0.12,
    "cancel": 0.12,
    "refund": 0.10,
    "repeat": 0.08,
}

# Regex fragments, written with accents (they are folded at compile time). A fragment starts
# at a word start and may end mid-word, so a stem like "rimbors" covers rimborso/rimborsare.
# Keep fragments specific: "brand" (de: fire) or "causa" (it: because) would fire on
# ordinary posts about brands, so only multi-word forms are used for such words.
INTENT_PATTERNS: dict[str, dict[str, list[str]]] = {
    "refund": {
        "en": [
            r"refund",
            r"money back",
            r"reimburs",
            r"charge ?back",
            r"compensat",
            r"want my money",
        ],
        "it": [
            r"rimbors",
            r"soldi indietro",
            r"restituzione (dei|del|dei miei) soldi",
            r"risarciment",
            r"indennizz",
            r"voglio (i miei|indietro i) soldi",
            r"storno",
        ],
        "et": [
            r"raha tagasi",
            r"raha tagastami",
            r"tagasimakse",
            r"hüvitis",
            r"kompensatsioon",
            r"tagasta(ge|ke)? (mu|minu )?raha",
        ],
        "es": [
            r"reembols",
            r"devoluci[oó]n del dinero",
            r"devuelv\w* (mi|el) dinero",
            r"mi dinero de vuelta",
            r"indemnizaci",
            r"compensaci",
        ],
        "fr": [r"rembours", r"mon argent", r"d[ée]dommag", r"indemnis"],
        "de": [r"rückerstatt", r"erstattung", r"geld zurück", r"entschädig", r"gutschrift"],
        "pt": [
            r"reembols",
            r"devolu[çc][ãa]o do dinheiro",
            r"meu dinheiro de volta",
            r"estorno",
            r"indeniza",
            r"ressarc",
        ],
    },
    "outage": {
        "en": [
            r"outage",
            r"(is|are|was|were|went|goes|still) down\b",
            r"not working",
            r"(doesn'?t|does not|isn'?t|is not|won'?t|will not|stopped) work",
            r"no (service|signal|internet|connection|power|network)\b",
            r"(can'?t|cannot|unable to) (connect|log ?in|access)",
            r"offline",
            r"crash(ed|es|ing)?\b",
            r"service interruption",
        ],
        "it": [
            r"disserviz",
            r"non funzion",
            r"guast",
            r"interruzion",
            r"fuori servizio",
            r"senza (linea|rete|servizio|connessione|internet|segnale|corrente|luce)",
            r"non (riesco|si riesce) (a|ad) (accedere|collegar|connetter|entrare)",
            r"[eè] (gi[uù]|down)\b",
            r"bloccat",
            r"non va (pi[uù]|internet|la linea)",
            r"assenza di (linea|rete|segnale)",
        ],
        "et": [
            r"ei tööta",
            r"ei toimi",
            r"rike\b",
            r"rikke",
            r"katkestus",
            r"katkes",
            r"(on|oli) maas\b",
            # "pole juba 2 päeva netti": a few words may stand between
            r"pole (\w+ ){0,3}(netti|internetti|levi|voolu|ühendust)\b",
            r"(netti|internetti|levi|voolu) pole\b",
            r"(levi|ühendus|internet|vool) puudub",
            r"ei saa (\w+ )?sisse",
            r"jookseb (\w+ )?(kokku|kinni)",
            r"(kokku|kinni) jooks",
            r"ei ühendu",
        ],
        "es": [
            r"no funciona",
            r"(est[aá]|se ha) ca[ií]d",
            r"sin (servicio|internet|conexi[oó]n|"
            r"se[ñn]al|luz|l[ií]nea)",
            r"aver[ií]a",
            r"corte de (luz|servicio|internet)",
            r"no anda\b",
            r"fuera de servicio",
            r"no (puedo|consigo) (acceder|conectar|entrar)",
        ],
        "fr": [
            r"ne (fonctionne|marche) (pas|plus)",
            r"\bpannes?\b",  # not "panneaux" (panels)
            r"coupure",
            r"hors service",
            r"pas de (r[ée]seau|connexion|internet|courant)",
            r"en rade",
            r"impossible de (me connecter|se connecter|acc[ée]der)",
            r"bugg?[ée]e?s?\b",  # not "buggers"
        ],
        "de": [
            r"funktioniert\w* (\w+ )?nicht",
            r"geht (\w+ )?nicht mehr",
            r"störung",
            r"ausf[aä]lle?\b",  # not "ausfallen" (turn out)
            r"kein (netz|internet|empfang|signal|strom)\b",
            r"keine (verbindung|internetverbindung)",
            r"nicht erreichbar",
            r"abgestürzt",
            r"ist down\b",
        ],
        "pt": [
            r"n[ãa]o funciona",
            r"fora do ar",
            r"sem (sinal|internet|servi[çc]o|conex[ãa]o|luz|"
            r"rede)",
            # "pane" alone is the Italian "bread": only in Portuguese turns of phrase
            r"(deu|dando|d[áa]|em|com|teve|uma) pane\b",
            r"\bpane (no|na|geral|el[ée]trica)\b",
            r"(sistema|site|app|aplicativo|internet|rede|sinal|servidor) caiu",
            r"instabilidade",
            r"n[ãa]o (consigo|d[áa] para) (acessar|conectar|entrar)",
        ],
    },
    "safety": {
        "en": [
            r"danger",
            r"unsafe",
            r"hazard",
            r"caught fire",
            r"(set|sets|setting) (on )?fire",
            r"burst into flames",
            r"smoke (from|coming|came)",
            r"started smoking",
            r"burn(ed|t|s|ing)? (me|my|his|"
            r"her|our|the house)",
            r"injur",
            r"(got|was|were|been) hurt",
            r"explo(d|s)",
            r"gas leak",
            r"electrocut",
            r"electric shock",
            r"overheat",
            r"poisoning",
            r"choking",
            r"ambulance",
        ],
        "it": [
            r"pericol",
            r"incendi",
            r"fiamme",
            r"prende fuoco",
            r"preso fuoco",
            r"fumo",
            r"ustion",
            r"ustionat",
            r"ferit[oaie]\b",
            r"infortun",
            r"espl(os|od)",
            r"fuga di gas",
            r"scossa",
            r"folgorat",
            r"surriscald",
            r"intossicat",
            r"ambulanza",
        ],
        "et": [
            r"ohtlik",
            r"\boht\b",
            r"tulekahju",
            r"põle(ma|b|nud|vad)\b",
            r"põles (ära|maha|läbi)",  # bare "põles" folds to French "pôles"
            r"süttis",
            r"suitsu",
            r"suitse(b|s)\b",  # not the bare "suits", an English word
            r"vigastus",
            r"vigasta",
            r"plahvat",
            r"gaasileke",
            r"elektrilöök",
            r"ülekuume",
            r"mürgitus",
            r"kiirabi",
        ],
        "es": [
            r"peligr",
            r"incendi",
            r"fuego",
            r"\bhumo\b",  # not "humor"
            r"quemad",
            r"quemadura",
            r"herid[oa]s?\b",
            r"lesi[oó]n",
            r"explot[oóa]",
            r"explosi[oó]n",
            r"fuga de gas",
            r"descarga el[eé]ctrica",
            r"electrocut",
            r"sobrecalent",
            r"intoxicaci",
            r"ambulancia",
        ],
        "fr": [
            r"danger",
            r"incendie",
            r"\bfeu\b(?! vert)",  # "feu vert" is a green light
            r"fum[ée]e",
            r"br[uû]l[ée]",
            r"bless[ée]e?s?\b",  # not the English "blessed"
            r"blessure",
            r"explos",
            r"fuite de gaz",
            r"[ée]lectrocut",
            r"surchauff",
            r"intoxication",
        ],
        "de": [
            r"gefährlich",
            r"gefahr\b",
            r"brandgefahr",
            r"in brand",
            r"brandgeruch",
            r"feuer\b",
            r"rauchentwicklung",
            r"qualm",
            r"verbrann",
            r"verletz",
            r"explo(d|s)",
            r"gasleck",
            r"gasgeruch",
            r"stromschlag",
            r"überhitz",
            r"vergiftung",
            r"notarzt",
        ],
        "pt": [
            r"perig",
            r"inc[êe]ndio",
            r"\bfogo\b",
            r"fuma[çc]a",
            r"queimad",
            r"ferid[oa]s?\b",
            r"les[ãa]o",
            r"explo(diu|s[ãa]o)",
            r"(vazamento|fuga) de g[áa]s",
            r"choque el[ée]trico",
            r"superaquec",
            r"intoxica[çc]",
            r"ambul[âa]ncia",
        ],
    },
    "legal": {
        "en": [
            r"lawyer",
            r"attorney",
            r"solicitor",
            # "sue" alone is a name and the Italian "his/her": only as a verb
            r"\b(will|gonna|going to|i'?ll|we'?ll|to|and|should|could|can|might) sue\b",
            r"\bsue (you|u|your|them|the company|for)\b",
            r"\bsued\b",
            r"\bsuing\b",
            r"lawsuit",
            r"legal action",
            r"small claims",
            r"(see|take|taking|sue) (you|this|them) (to|in) court",
            r"in court\b",
            r"consumer protection",
            r"ombudsman",
            r"class action",
            r"trading standards",
            r"report (you|this) to",
        ],
        "it": [
            r"avvocat",
            r"denunci",
            r"azione legale",
            r"azioni legali",
            r"vie legali",
            r"tribunale",
            r"(far|faccio|farò|fare|faremo) causa",
            r"codacons",
            r"adiconsum",
            r"altroconsumo",
            r"agcom",
            r"diffida",
            r"class action",
            r"giudice di pace",
            r"carabinieri",
        ],
        "et": [
            r"advokaa[dt]",
            r"jurist",
            r"kohtusse",
            r"kohtu(s|le|tee)?\b",
            r"kohus\b",
            r"\bhagi",
            r"tarbijakaitse",
            r"\bttja\b",
            r"õigusabi",
            r"politseisse",
            r"kaebuse (esitan|"
            r"esitama)",
        ],
        "es": [
            r"abogad",
            r"(voy a|vamos a|les voy a|os voy a|te voy a) demandar",
            r"demanda judicial",
            r"poner una demanda",
            r"denuncia",
            r"juzgado",
            r"tribunal",
            r"acci[oó]n(es)? legal",
            r"facua",
            r"\bomic\b",
            r"oficina (municipal )?del consumidor",
        ],
        "fr": [
            r"avocat",
            r"porter plainte",
            r"(je vais|on va) porter plainte",
            r"proc[èe]s\b",
            r"tribunal",
            r"en justice",
            r"action en justice",
            r"mise en demeure",
            r"ufc(-| )que choisir",
            r"m[ée]diateur",
            r"dgccrf",
        ],
        "de": [
            r"anwalt",
            r"anwält",
            r"verklag",
            r"klage einreich",
            r"vor gericht",
            r"gerichtlich",
            r"rechtliche schritte",
            r"verbraucherzentrale",
            r"schlichtungsstelle",
            r"bundesnetzagentur",
            r"abmahnung",
            r"anzeige erstatt",
        ],
        "pt": [
            r"advogad",
            r"process(ar|arei|aremos|ando)\b",
            r"processo judicial",
            r"\bprocon\b",
            r"justi[çc]a",
            r"a[çc][ãa]o judicial",
            r"tribunal",
            r"juizado",
            r"pequenas causas",
            r"anatel",
        ],
    },
    "cancel": {
        "en": [
            r"cancel\w* (my |our |the )?(subscription|contract|account|service|membership|plan|"
            r"policy)",
            r"unsubscrib",
            r"switch(ing)? (to|provider|providers|carrier|bank)",
            r"leaving (you|for)\b",
            r"close my account",
            r"closing my account",
            r"terminate (my |the )?(contract|account|subscription)",
            r"never again",
            r"done with (you|this company)",
            r"taking my business elsewhere",
            r"(find|finding|look for|looking for) (a|another) (new )?provider",
        ],
        "it": [
            r"disdett",
            r"recesso",
            r"recedere",
            r"cambi(o|are|erò|ero) (operatore|gestore|"
            r"fornitore|compagnia|banca)",
            r"pass(o|erò|ero) (ad altro|alla concorrenza|a un altro)",
            r"annull\w* (l'|il |la )?(abbonamento|contratto)",
            r"(chiudere|chiudo) il conto",
            r"mai pi[uù]",
            r"vi lascio",
            r"me ne vado",
        ],
        "et": [
            r"lõpetan (lepingu|teenuse)",
            r"lõpeta\w* leping",
            r"lepingu lõpetami",
            r"ütlen (lepingu|teenuse) üles",
            r"üles öelda",
            r"loobun",
            r"vahetan (teenusepakkujat|"
            r"operaatorit|panka|pakkujat|firmat)",
            r"lähen (üle|konkurendi)",
            r"konkurendi juurde",
            r"tühistan (lepingu|tellimuse|konto)",
            r"mitte kunagi enam",
            r"enam kunagi",
        ],
        "es": [
            r"dar(me)? de baja",
            r"me (doy|di) de baja",
            r"baja del servicio",
            r"cancelar (mi|el) (contrato|suscripci|cuenta|servicio|l[ií]nea)",
            r"cambiar(me)? de (compa[ñn][ií]a|operador|proveedor|banco)",
            r"portabilidad",
            r"me voy a (otra|la competencia)",
            r"nunca m[aá]s",
        ],
        "fr": [
            r"r[ée]silier",
            r"r[ée]siliation",
            r"d[ée]sabonn",
            r"changer d'op[ée]rateur",
            r"changer de (fournisseur|banque|op[ée]rateur)",
            r"je (pars|passe) chez",
            r"plus jamais",
            r"annuler mon (abonnement|contrat)",
        ],
        "de": [
            r"kündig",
            r"(anbieter|bank)wechsel",
            r"wechsle (zu|den|die|den anbieter)",
            r"nie wieder",
            r"vertrag (beenden|auflösen)",
            r"abo beenden",
        ],
        "pt": [
            r"cancelar (o |meu |minha |a )?(plano|contrato|assinatura|conta|linha)",
            r"cancelamento",
            r"portabilidade",
            r"trocar de (operadora|banco|plano)",
            r"mudar de (operadora|banco)",
            r"nunca mais",
            r"rescindir",
            r"rescis[ãa]o",
        ],
    },
    # Repeated contact: the customer says they tried before, or got no answer. Not plain
    # "again" ("crashed again" repeats the fault, not the contact).
    "repeat": {
        "en": [
            r"(i|we)('ve| have)? (already |now )?(called|contacted|emailed|messaged|dm'?d|"
            r"written to|wrote to|complained to|reached out to|tweeted) (you|your)\b",
            r"(called|emailed|messaged|contacted|dm'?d|tweeted|wrote to) (you )?"
            r"(\w+ )?(times|twice)",
            r"for the (second|third|fourth|fifth|[2-9](nd|rd|th)|1\d+th|umpteenth|nth) time",
            r"still (no|not a|without an?y?) (reply|response|answer|word|call back)",
            r"still (waiting|haven'?t heard|have not heard)",
            r"no( ?one|body) (has )?(replied|responded|answered|got back|gets back|replies)",
            r"(keep|kept) (being )?ignor",
            r"ignoring (me|my|us|our)",
            r"chasing (this|you|up)",
        ],
        "it": [
            r"(ho|abbiamo) gi[aà] (chiamato|contattato|scritto|segnalato|telefonato|"
            r"inviato)",
            r"(vi )?(ho|abbiamo) (scritto|chiamato|telefonato) (gi[aà] )?(\w+ )?volte",
            r"per la (seconda|terza|quarta|quinta|ennesima|\w+esima) volta",
            r"ancora (nessuna|nessun|niente|zero) (risposta|riscontro|notizia)",
            r"nessuno (mi |ci )?(risponde|ha risposto|richiama)",
            r"sollecit",
            r"ancora in attesa",
        ],
        "et": [
            r"(juba|jälle|uuesti) (helistasin|kirjutasin|pöördusin|saatsin)",
            r"(teist|kolmandat|neljandat|viiendat|mitmendat) korda",
            # "teine kord" is also "next time"; "kolmas kord" alone may be a third visit
            r"juba (kolmas|neljas|viies|mitmes) kord",
            r"(kolmas|neljas|viies|mitmes) kord (kirjutan|helistan|pöördun|küsin)",
            r"(mingit|ühtegi) vastust",
            r"(keegi|ükski|klienditugi|teenindus|klienditeenindus) ei vasta",
            r"(ikka|endiselt) (veel )?(pole|ei ole) (vastust|vastatud|vastanud)",
            r"ootan (ikka|endiselt|siiani) vastust",
            r"korduvalt",
            r"(kaks|kolm|neli|viis|mitu) korda (olen )?(juba )?(helistanud|kirjutanud|"
            r"pöördunud)",
        ],
        "es": [
            r"(ya )?(les |os )?(he|hemos) (llamado|escrito|contactado|reclamado) (ya )?"
            r"(\w+ )?(veces|antes)",
            r"ya (les |os )?(he|hemos) (llamado|escrito|contactado|reclamado)",
            r"por (segunda|tercera|cuarta|quinta|en[ée]sima) vez",
            r"(nadie|ninguno) (me |nos )?(responde|contesta|ha respondido|ha contestado)",
            r"sigo (esperando|sin respuesta)",
            r"sin (ninguna )?respuesta",
        ],
        "fr": [
            r"(j'ai|nous avons) d[ée]j[àa] (appel|contact|[ée]crit|signal|relanc)",
            r"pour la (deuxi[èe]me|troisi[èe]me|quatri[èe]me|cinqui[èe]me|ni[èe]me|"
            r"[2-9]e|[2-9]i[èe]me) fois",
            r"personne ne (me |nous )?r[ée]pond",
            r"toujours (pas de|aucune|sans) (r[ée]ponse|nouvelles|retour)",
            r"toujours en attente",
            r"je (vous )?relance",
            r"(deuxi[èe]me|troisi[èe]me|[2-9]e|nouvelle) relance",
        ],
        "de": [
            r"(habe|haben) (schon|bereits) (\w+ )?(angerufen|geschrieben|kontaktiert|"
            r"gemeldet|reklamiert|nachgefragt)",
            r"zum (zweiten|dritten|vierten|fünften|x-ten|n-ten|wiederholten) mal",
            r"(keiner|niemand) (antwortet|meldet sich|reagiert|ruft zurück)",
            r"(immer noch|noch immer|bis heute) (keine|ohne) (antwort|rückmeldung|reaktion)",
            r"warte (immer noch|noch immer|seit \w+ )?auf (eine )?(antwort|rückmeldung)",
        ],
        "pt": [
            r"j[áa] (liguei|reclamei|escrevi|mandei|entrei em contato|abri)",
            r"(liguei|reclamei|escrevi|mandei mensagem) (\w+ )?vezes",
            r"pela (segunda|terceira|quarta|quinta|en[ée]sima) vez",
            r"ningu[ée]m (me |nos )?(responde|atende|retorna|respondeu)",
            r"(continuo|ainda|sigo) (estou )?(esperando|aguardando|sem resposta|sem retorno)",
            r"sem (nenhuma )?(resposta|retorno)",
        ],
    },
}


def fold(text: str) -> str:
    """Lower-case and strip accents: users type "toota" for "tööta", "perche" for "perché"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def compile_keywords(*patterns: str) -> re.Pattern[str]:
    """One regex for keyword patterns, matched on folded text from a word's start."""
    return re.compile(r"(?<!\w)(?:" + "|".join(fold(p) for p in patterns) + ")", re.UNICODE)


def _compile(patterns: dict[str, list[str]]) -> re.Pattern[str]:
    return compile_keywords(*(p for frags in patterns.values() for p in frags))


_INTENT_RE: dict[str, re.Pattern[str]] = {
    name: _compile(pats) for name, pats in INTENT_PATTERNS.items()
}


def match_intents(text: str) -> list[str]:
    """Intent names whose keywords occur in ``text``, heaviest first."""
    folded = fold(text)
    found = [name for name, rx in _INTENT_RE.items() if rx.search(folded)]
    return sorted(found, key=lambda n: -INTENT_WEIGHTS[n])


def level_for(score: float) -> Priority:
    """Map a score to P1..P4 with the thresholds documented above."""
    if score >= P1_THRESHOLD:
        return "P1"
    if score >= P2_THRESHOLD:
        return "P2"
    if score >= P3_THRESHOLD:
        return "P3"
    return "P4"


def waited_before_seen(
    created_at: datetime, ingested_at: datetime, *, backfill: bool = False
) -> float | None:
    """Seconds a post waited before thirdring saw it (0 if the clocks disagree); None for
    backfill, where the replay made it late, not the customer's wait."""
    if backfill:
        return None
    return max(0.0, (ingested_at - created_at).total_seconds())


def _followers_label(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}".rstrip("0").rstrip(".") + "M"
    return f"{round(n / 1000)}k"


@dataclass(frozen=True)
class UrgencyWeights:
    """The tunable weights of the formula (module docstring); defaults are the constants."""

    complaint: float = W_COMPLAINT
    negative: float = W_NEGATIVE
    intent_cap: float = INTENT_CAP
    vip: float = VIP_BOOST
    reach_per_decade: float = REACH_PER_DECADE
    reach_cap: float = REACH_CAP
    waited_per_hour: float = WAITED_PER_HOUR
    waited_cap: float = WAITED_CAP
    intents: dict[str, float] = field(default_factory=lambda: dict(INTENT_WEIGHTS))
    severity: dict[int, float] = field(default_factory=lambda: dict(SEVERITY_WEIGHTS))

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> UrgencyWeights:
        """Defaults with ``overrides`` applied (``intents`` and ``severity`` merge per key)."""
        base = cls()
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown urgency weight(s) {sorted(unknown)}; known: {sorted(known)}")
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "intents":
                bad = set(value) - set(INTENT_WEIGHTS)
                if bad:
                    raise ValueError(f"unknown intent(s) {sorted(bad)}: {sorted(INTENT_WEIGHTS)}")
                changes[key] = {**base.intents, **{k: float(v) for k, v in value.items()}}
            elif key == "severity":
                levels = {int(k): float(v) for k, v in value.items()}
                if not set(levels) <= {1, 2, 3, 4}:
                    raise ValueError(f"severity levels are 1-4, not {sorted(levels)}")
                changes[key] = {**base.severity, **levels}
            else:
                changes[key] = float(value)
        return replace(base, **changes)


_weights_cache: tuple[str, UrgencyWeights] | None = None


def get_weights() -> UrgencyWeights:
    """The weights in force: defaults plus ``$THIRDRING_URGENCY_WEIGHTS`` (JSON or a path)."""
    global _weights_cache
    raw = os.environ.get(WEIGHTS_ENV, "").strip()
    if _weights_cache is not None and _weights_cache[0] == raw:
        return _weights_cache[1]
    if not raw:
        weights = UrgencyWeights()
    else:
        try:
            text = raw if raw.startswith("{") else Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{WEIGHTS_ENV}: cannot read {raw} ({exc.strerror})") from None
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{WEIGHTS_ENV}: not valid JSON ({exc.msg})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"{WEIGHTS_ENV}: expected a JSON object")
        weights = UrgencyWeights.from_overrides(overrides)
    _weights_cache = (raw, weights)
    return weights


@dataclass
class UrgencyResult:
    score: float
    level: Priority
    reasons: list[str] = field(default_factory=list)
    # One {"reason": str, "weight": float} per reason (same order and string), then
    # "other signals" and caps as needed, so that the weights add up to the score.
    contributions: list[dict[str, Any]] = field(default_factory=list)


def assess_urgency(
    text: str,
    *,
    p_negative: float,
    p_complaint: float,
    sentiment_label: str,
    author: Author | None = None,
    severity: int | None = None,
    waited_s: float | None = None,
    weights: UrgencyWeights | None = None,
) -> UrgencyResult:
    """Score, level, reasons and contributions for one post (formula: module docstring).

    ``severity`` is the complaint severity level (0 or 1-4, from the severity head); it
    counts only for a complaint (P(complaint) >= 0.5). ``waited_s`` is how long the post
    waited before thirdring saw it (:func:`waited_before_seen`; None: unknown, adds
    nothing). ``weights`` default to :func:`get_weights`.
    """
    w = weights if weights is not None else get_weights()
    named: list[tuple[str, float]] = []  # (reason, contribution), in reason order
    other = 0.0  # contributions not worth naming as a reason
    intents = match_intents(text)
    raw_intent = sum(w.intents.get(i, 0.0) for i in intents)
    intent = min(w.intent_cap, raw_intent)
    intent_scale = intent / raw_intent if raw_intent > 0 else 0.0
    named += [(f"intent:{i}", w.intents.get(i, 0.0) * intent_scale) for i in intents]
    is_complaint = p_complaint >= 0.5
    if is_complaint:
        named.append((f"complaint {p_complaint:.2f}", w.complaint * p_complaint))
    else:
        other += w.complaint * p_complaint
    if sentiment_label == "negative":
        named.append((f"negative sentiment {p_negative:.2f}", w.negative * p_negative))
    else:
        other += w.negative * p_negative
    sev = w.severity.get(int(severity), 0.0) if is_complaint and severity else 0.0
    if sev:
        named.append((f"severity {int(severity)}", sev))  # type: ignore[arg-type]
    core = w.complaint * p_complaint + w.negative * p_negative + intent + sev

    amp = 0.0
    scale = min(1.0, core / AMP_FULL_AT)
    if author is not None:
        if author.vip:
            amp += w.vip * scale
            named.append(("vip customer", w.vip * scale))
        followers = author.followers or 0
        if followers > REACH_FLOOR:
            reach = min(w.reach_cap, w.reach_per_decade * math.log10(followers / REACH_FLOOR))
            amp += reach * scale
            if followers >= REACH_REASON_MIN:
                named.append((f"reach {_followers_label(followers)} followers", reach * scale))
            else:
                other += reach * scale
    if waited_s is not None and waited_s >= WAITED_FLOOR_S:
        waited = min(w.waited_cap, w.waited_per_hour * waited_s / 3600) * scale
        if waited > 0:
            amp += waited
            named.append((f"waited {duration_text(waited_s)} before seen", waited))

    raw_score = core + amp
    score = min(1.0, max(0.0, raw_score))
    adjustments: list[tuple[str, float]] = []
    if score < raw_score:
        adjustments.append(("cap: 1.0", score - raw_score))
    if not is_complaint and (
        sentiment_label == "positive" or (sentiment_label == "neutral" and not intents)
    ):
        if score > NOT_URGENT_CAP:
            adjustments.append(("cap: not urgent", NOT_URGENT_CAP - score))
        score = min(score, NOT_URGENT_CAP)
    score = round(score, 4)
    contributions = [{"reason": r, "weight": round(c, 4)} for r, c in named]
    if other > 0:
        contributions.append({"reason": "other signals", "weight": round(other, 4)})
    contributions += [{"reason": r, "weight": round(c, 4)} for r, c in adjustments]
    return UrgencyResult(
        score=score,
        level=level_for(score),
        reasons=[r for r, _ in named],
        contributions=contributions,
    )
