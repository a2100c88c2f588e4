"""Is this request a bot or a link preview, or a browser's prefetch?  (pure, cached)

Crawler patterns come from the maintained `crawler-user-agents` list, less the few that match
real browsers (DROP_PATTERNS); our own rules (EXTRA_RULES) add link-preview fetchers, headless
browsers, HTTP libraries, scanners and generic bot vocabulary; a UA with no browser or platform
word at all, or shorter than MIN_UA_LEN, is a bot too. Measured on public UA lists, with rules
tuned on one half of a list and judged on the other (loadtests/bots_data.py, bots_eval.py).

The list's 1,500 patterns and our rules run in RE2 (linear time: ~5-10 µs for a browser UA,
~20 µs for a crawler); verdicts are cached per UA.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources

import re2

DROP_PATTERNS: frozenset[str] = frozenset({
    "Viber",                 # Viber in-app browser: "... Mobile Safari/537.36 Viber/27.4.0.0" (-> rule "^viber")
    "MetaIAB Facebook",      # Facebook Android in-app WebView ("...; wv) ... MetaIAB Facebook")
    "Fluid",                 # Fluid site-specific browser for macOS
    "AP3A\\.240617\\.008",   # an Android *build number* (instance is an Instagram in-app browser UA)
    "008\\/",                # 80legs/AWR "008/0.83"; also hits "TS1008/1.0" devices (-> URL rule catches the bot)
    "Butterfly",             # HTC Butterfly phones (Topsy bot is caught by the URL rule)
    "Code\\/1\\.",            # also hits "...Code/1.x" tokens of other apps; VS Code's own UA -> rule "coding_tools"
    "Expanse",               # Android device "Expanse" (Palo Alto scanner -> rule "expanse, a palo alto")
    "Fever",                 # "Fever_Plus" devices (Fever feed reader is caught by URL/feed rules)
    "Sogou",                 # Sogou Mobile Browser / SogouSearch app (Sogou spiders caught by "spider")
    "Sonic",                 # ViewSonic / "O+ Sonic" devices
    # app and add-on names that the list keeps for one fetcher, and that humans' UAs carry too; the
    # fetchers' own UAs are still caught (bot word, URL, e-mail, or no browser word at all)
    "Synapse",               # "SynapseWorkstation" IE add-on (Matrix's Synapse says "bot" and has a URL)
    "BW\\/",                 # Ask toolbar "AskTbBW/3.9" in Firefox ("^BW\/" stays, and the "compatible;" rule)
    "mail\\.ru",             # Mail.ru's search app "CHANNEL_m.mail.ru" (its crawlers: Mail.RU_Bot, URL)
    "Blackboard",            # the Blackboard mobile app (the crawler is "Blackboard Safeassign" -> rule)
    "Adventurer",            # a browser build "Adventurer/3.0" (the bot sends the bare word: no browser word)
    "Notion\\/",             # Notion's desktop and mobile apps (its fetcher has a URL and an e-mail)
    "Tumblr\\/",             # the Tumblr app (its fetcher "Tumblr/14.0.835.186" has no browser word)
    "Grammarly\\/",          # Grammarly's desktop app (its fetcher has a URL)
})

# Case-insensitive rules, written in lower case, matched against ua.lower().
# A pattern starting with "^" is only tried at the start of the UA.  Dots are escaped.
# Rules with lookaround run in Python's re (RE2 has none), all the others in RE2.
EXTRA_RULES: dict[str, list[str]] = {
    # link-preview / unfurl fetchers (most are also in crawler-user-agents; kept here so the
    # requirement does not depend on the upstream list)
    "preview": [
        "telegrambot", "slackbot", "slack-imgproxy", "discordbot",
        "facebookexternal", "facebot", "facebookcatalog", "meta-external",
        "twitterbot", "linkedinbot", "vkshare", "skypeuripreview", "redditbot",
        "pinterestbot", r"pinterest\.com/bot", "embedly", "iframely", "google-pagerenderer",
        "googleimageproxy", "yahoomailproxy", "bitlybot", "applebot",
        "cardyb", "unfurl", "linkpreview", "link preview",
        "urlpreview", "url preview", "microsoftpreview", "bingpreview", "kakaotalk-scrap",
        "snap url preview", "opengraph", "flipboardproxy",
        "linkexpander", "imageproxy", "emailproxy", "mailproxy", "googlemessages",
        r"google (?:favicon|keyword|pp default|web preview)", "binglocalsearch", r"yandex\.translate",
        "line-poker", "microlink", "onebox", "favicon",
    ],
    # mail security gateways open every link of a message before the reader does
    "mail_security": [
        "safelinks", "urldefense", "linkprotect", "mimecast", "barracuda", "ironport", "proofpoint",
        "trendmicro", "trend micro", "fortiguard", "forcepoint", "zscaler", "checkpoint", "avanan",
        "sophos", "paloalto", "palo alto",
    ],
    # messengers' and fediverse servers' previewers that go by the app's own name: the same name is in
    # humans' in-app and desktop UAs, so these are only tried outside APP_SHELLS
    "preview_by_app_name": [
        "^whatsapp", "whatsapp/[0-9.]+ [ain]$", "mastodon", "pleroma", "misskey", "akkoma", "^viber",
        "outbrain", "^signal", "^threema", "^element",
    ],
    # AI crawlers, assistants and agents fetching a page for a model or for a person's question; a
    # name ending in "bot"/"spider" is caught by "bot_words" as well
    "ai_agents": [
        "gptbot", r"chatgpt[- ](?:user|agent|operator|browser)", r"oai-?search", "openai", r"claude(?:bot|-|[ _]code)",
        "anthropic", r"perplexity(?:bot|-?user)", "google-extended", "googleother", "google-cloudvertex",
        "google-gemini", r"gemini[-_ ](?:cli|agent|fetch|deep)", "notebooklm", "bytespider", "tiktokspider",
        "amazonbot", r"amzn-(?:user|search)", "amazonbuyforme", "novaact", r"cohere(?:-ai|-training)", "meta-webindexer",
        "meta-externalagent", "meta-externalfetcher", "facebookbot", "mistralai", "duckassist", "youbot",
        "phindbot", "diffbot", "ccbot", "ai2bot", "omgili", "timpibot", "imagesift", "img2dataset",
        "iaskspider", "petalbot", "pangubot", "sidetrade", "webzio", "quillbot", "linerbot", "andibot",
        "exabot", "exasearch", "firecrawl", "crawl4ai", r"jina(?:-reader|\.ai)", "tavily", "browserbase",
        r"browser[-_ ]use", "manus-user", "devin/", "lightpanda", "apify", "scrapingbee", "zenrows",
        "brightdata", "bright data", "kagibot", "kangaroo bot", "anchor browser", "agentql", "browserless",
        "hyperbrowser", "steel-browser", "skyvern", "multion", "cotoyogi", "laiondownloader",
        "spawning-ai", "velenpublic", "thinkbot", "aiwebindex", "shapbot", "terracotta", "anomura",
        "bedrockbot", "atlassian-bot", "klaviyoaibot", "qualifiedbot", "echoboxbot", r"ai[- ]agent",
        "yandex(?:additional|gpt|bot|images|video|media|metrika|"
        r"market|blogs|calendar|direct|favicons|webmaster|mobilebot|news|render|screenshot|accessibility|"
        r"combot|sprav|tracker|vertis|adnet|dialogs|fordomain|pagechecker|partner|verticals)",  # not YandexSearch (app)
        # a page fetch that appends "(compatible; Name/1.0)" to a whole browser UA: browsers never do
        r"(?:[) ](?:safari|chrome|firefox|edg)/[\d.]+ ?\(|like gecko\)?[;,] ?)compatible; ?[a-z][a-z0-9._ !-]*/v?\d",
    ],
    # coding assistants and their agents: a link reaches them to be read, not clicked (a person's
    # click on a link in an editor opens the system browser); VS Code's forks send their Electron UA
    "coding_tools": [
        r"(?:^|[^a-z])(?:code|cursor|windsurf|trae|kiro|vscodium|positron|void|pearai|antigravity)/\d[\w.-]* "
        r"chrome/[\d.]+ electron/",
        r"(?:^|[^a-z])(?:cursor|windsurf|codeium|trae|kiro|aider|cline|roo-?code|kilo-?code|opencode|zed|junie|"
        r"tabnine|sourcegraph|cody|qodo|goose|openhands)(?:[-_ ](?:agent|cli|code|fetch)|/\d)",
        r"claude[-_ ]?code", r"codex[-_ ](?:cli|exec|tui|rs|agent)", r"codex_cli", "openai codex", r"\bcodex/\d",
        r"github[-_ ]?copilot", r"copilot[-_ ](?:chat|agent|cli|language|swe|coding|intellij|vscode)",
        r"vscode[-_ ]", r"gemini[-_ ]cli", r"qwen[-_ ]code", "amazon q", "amazonq", "q developer",
        r"mcp[-_ ](?:fetch|server|client)", "model context protocol", "modelcontextprotocol",
    ],
    # Outlook's own engine and HTTP stack: images of a mail being shown, calendars, previews; a reader's
    # click on a mail link goes to the browser, which is what reaches us. Office's existence and protocol
    # probes come before the hyperlink fetch below. (A click on a link inside a Word, Excel, PowerPoint or
    # OneNote document is *not* a bot: the app fetches the link itself - "Microsoft Office Word 2014",
    # "ms-office", Mac "Word/16" - follows our 302 and hands the browser the product URL with our click
    # id, so that fetch is the only request a human's click makes to us; judging it a bot would leave the
    # buyer's order unattributable.)
    "office": [
        r"microsoft outlook", r"microsoft office/\d", r"microsoft office (?:existence|protocol) discovery",
        "microsoft office mobile", "^macoutlook/", r"outlook-(?:ios|android)/",
    ],
    # headless / automation / synthetic monitoring
    "headless": [
        "headless", "phantomjs", "slimerjs", "htmlunit", "jsdom", "puppeteer", "playwright",
        "selenium", "webdriver", "lighthouse", "pagespeed", "page speed", r"ptst[/ ]\d", "gtmetrix",
        "prerender", "rendertron", "cypress", "casperjs", r"splash\b", "synthetic",
        "datadog", "dynatrace", "pingdom", "uptime", "statuscake", "gomezagent", "neustar wpm",
        "iplabel", "debugbear", "rival iq", "nodemeter", "observatory/", "network diagnostics",
        "tester", r"zombie\.js", "browserkit", "dejaclick", "evaliant", "catchpoint", "ruxit",
        "speedcurve", "webpagetest", "sitespeed", "thousandeyes", "newrelic", "appdynamics",
        "ghost inspector", "browserstack", "saucelabs", "lambdatest", "chromedp",
        # page-to-image renderers
        "wkhtmlto", "webkit2png", "websnapr", "browsershots", "screenshot", "thumbnail", "imgsizer",
    ],
    # HTTP libraries / CLI tools / SDKs (UAs that never appear in a human browser)
    "http_library": [
        "^curl", "curl/", "wget", "^aria2", "httpie", "lwp-", "lwp::", "libwww-perl", "python",
        "aiohttp", "httpx", "urllib", "requests/", "request-promise", "go-http-client", "^go ",
        "^go/", "okhttp", "^java", r"(?:^|[^a-z])java/\d", "apache-httpclient", "jakarta",
        "httpclient", "axios", "node-fetch", "^node", r"node\.js", "undici", "^got",
        "sindresorhus/got", "^deno/", "^bun/", "^ruby", "faraday", "httparty", "rest-client",
        "typhoeus", "^php", "guzzlehttp", "^dart", "reqwest", "^hyper/", r"http\.rb",
        "restsharp", "winhttp", "postmanruntime", "insomnia", "scrapy", "colly", "mechanize",
        "powershell", "libcurl", r"(?:^|[^a-z0-9_])ureq\b", "fasthttp", r"(?:^|[^a-z0-9_])feign\b", "^grpc", r"vert\.x",
        "reactor-netty", "akka-http", "unirest", "^perl", "^wordpress", "http_request",
        "^rest", "^fetch", "^http", "apachebench", "^ab/", "libredtail",
        "http client", "web services client", "^npm/", r"node/v\d", "gradle/", "^swurl", "^swcd ",
        "networkingextension/", "download ?manager", "downloader", r"mail/[\d.]+ cfnetwork", "libwhisker",
        "cryptoapi", "spraycan", "^p2/", "^k6/", "^locust", "^vegeta", "^hey/", "^wrk", "^siege",
    ],
    # scanners / monitoring / infra agents
    "scanner": [
        "nuclei", "gobuster", "masscan", "zgrab", "nmap", "nikto", "sqlmap",
        "wpscan", "arachni", "acunetix", "burp", "shodan", "censys", r"\$\{", r"\{\{", r"<\?",
        "jndi:", "prometheus", "grafana", "collectd", "munin", "zabbix", "nagios", "icinga",
        "cloudflare", r"(?:^|[^a-z0-9_])dcv\b", "expanse, a palo alto", "internal dummy connection",
        "l9explore", "l9tcpid", "leakix", "keydrop", "internetmeasurement", "netcraft",
        "whatweb", "feroxbuster", "ffuf", "dirbuster", "dirb/", "openvas", "nessus",
        "qualys", "netsparker", "invicti", "detectify", "probely", "tenable", "securitytrails",
        "bitsight", "riskiq", "binaryedge", "onyphe", "criminalip", "zoomeye", "fofa", "greynoise",
        "project25499", "stretchoid", "hafnium", "wordfence", "sucuri", "fuzz", "pentest",
        "zmeu", "morfeus", "hello, world", "hello world", "nimbostratus", "cyberscan", "internet-census",
        "safeassign", "virustotal", "urlscan", "malware", "threat", "abuse",
    ],
    # crawler vocabulary and unmistakable bot signals: tried everywhere, APP_SHELLS included
    "bot_words": [
        r"bot(?<=[a-z0-9_-]bot)(?<!cubot)s?(?:\b|_)(?!tab)",  # glued: googlebot, semrushbot_
        r"bot(?<![a-z0-9_-]bot)s?\b(?! *(?:\d|tab\b|build\b|plus\b|junior|senior))",  # standalone "bot" (not "M bot 51")
        r"b-o-t\b", "crawl", r"spider(?! \d)", "scrap", "slurp", "archiv", "harvest", "indexer",
        r"(?:^|[^a-z])https?://", r"(?:^|[^a-z])www\.",  # a URL
        r"[a-z0-9._%+-]@[a-z0-9-]+\.[a-z]{2,}",  # an e-mail address
        r"time/1\d{12}",  # a millisecond timestamp stamped by a tool
    ],
    # generic crawler vocabulary and other bot-ish signals (not tried inside APP_SHELLS, where an app's
    # name or a word like "check" or "scan" is as likely as in a tool's UA)
    "generic": [
        "scan", "virus", "fetch", "monitor", "check",
        "inspector", "measurement", "snapshot", "sitemap", "collector", "grabber",
        "metric", "prospect", "offline", "dataset", r"\bsurvey\b", r"ba?cklinks?\b",
        "validator", "analy[sz]er", "audit", "probe", "detector", "extractor", "verif",
        "lookup", "research", "transcoder", "torrent", r"\brss|rss\b", r"feed ?(?:reader|parser|fetch)",
        r"user[ _-]?agent", "google-", "googleprober", "googlesites", "googleadsense",
        "google search console", "duplexweb", "babelfish",
        # named fetchers with none of the words above (RSS readers, AI fetchers, old crawlers)
        "reederfor", "firefox mutant", "daumoa", "sqworm", "clarsentia", "heimdall",
        "snapsearch", "webster pro", "linkscan", "sitecheck",
        r"^mozilla/\d\.\d$", r"^mozilla/\d\.\d [^\s()]+$",
        r"^(?:chrome|firefox|safari|opera|edge|mozilla|msie|internet explorer)$",  # a browser always sends a version
    ],
}

# "Mozilla/5.0 (anything)" and nothing else, unless it names a real platform (old MSIE etc.); kept out
# of EXTRA_RULES so that only a UA ending in ")" pays for its look-ahead
BARE_MOZILLA = (r"^mozilla/\d\.\d \((?![^)]*(?:msie|windows|trident|konqueror|android|iphone|ipad|linux|macintosh|"
                r"x11|playstation|nintendo|dreamcast|foma|netfront|browser|symbian|nokia|blackberry|beos|win\d|winnt|"
                r"win32|mac_|amiga|os/2|sunos|freebsd|ms-office|aol \d))[^)]*\)$")

# Inside an in-app browser, a webview or a desktop (Electron) app, only these groups count: the
# crawler list's brand names and the vocabulary above are skipped there, since the app's own name
# (Notion, WhatsApp, Blackboard, Tumblr...) or a word like "check" is as likely in a human's UA.
STRONG_GROUPS = ("preview", "ai_agents", "coding_tools", "headless", "bot_words")

# A human's in-app browser or app webview: iOS WKWebView ("Mobile/15E148" with no "Safari/" after
# it), Android WebView ("; wv)"), Electron desktop apps, and the in-app tokens of the big apps.
APP_SHELLS = [
    r"^mozilla/5\.0 \((?:iphone|ipad|ipod);[^)]*\) applewebkit/[\d.+]+ \(khtml, like gecko\)(?: [^ ]+)? "
    r"mobile/[0-9a-z]+(?:$| [^s]| s[^a])",
    r"^mozilla/5\.0 \(linux; (?:u; )?android [^)]*; wv\) applewebkit/",
    r"\) applewebkit/[\d.]+ \(khtml, like gecko\) (?:[^ ]+ )*chrome/[\d.]+ (?:[^ ]+ )*electron/\d",
    r"\[fban/|fb_iab/|\bfbav/|\binstagram \d|\bbarcelona \d|musical_ly|bytedancewebview|bytelocale|"
    r"micromessenger/|\bline/\d|snapchat/\d|\[pinterest/|\[linkedinapp\]|twitterandroid|twitter for i|"
    r"telegram-(?:android|ios)|kakaotalk[ /]\d|naver\(inapp|vkandroidapp|vkclient/|zalo(?:theme| android)|"
    r"yjapp-|\bgsa/\d|googleapp/|\bviber/\d|valve steam (?:gameoverlay|tenfoot)|weibo|baiduboxapp|"
    r"aliapp\(|alipayclient|dingtalk|\bqq/\d",
]

# Tokens of human browsers that trip a rule (a vendor URL in the UA, a toolbar or device name): removed
# before a flagged UA is judged again.
BENIGN = (r"(?:advanced|avant) browser(?:/[\w.]+)? \(http://www\.avantbrowser\.com\)|"
          r"embedded ?w(?:eb )?b(?:rowser)?-? ?[\d.,]* *(?:from: )?https?://[^ ;)]*|"
          r"qtweb internet browser/[\d.]+ http://www\.qtweb\.net|google-tr-\d|firetorrent|scanpal|ea download manager")

# A UA with none of these tokens does not look like any browser / device / app webview.
BROWSER_VOCAB = re.compile(
    r"mozilla|opera|applewebkit|gecko|khtml|safari|chrome|firefox|msie|trident|edge|android|"
    r"iphone|ipad|ipod|ios|linux|windows|macintosh|mac os|cfnetwork|darwin|dalvik|midp|cldc|"
    r"profile/|browser|symbian|series ?[46]0|nokia|blackberry|bb10|samsung|sonyericsson|"
    r"lg-|mot-|huawei|xiaomi|lenovo|alcatel|zte|lynx|links|w3m|dillo|netsurf|ucweb|obigo|netfront|"
    r"openwave|up\.browser|wap|maui|smart-?tv|tizen|webos|roku|playstation|nintendo|xbox|"
    r"kindle|silk|j2me|brew|polaris|teleca|dolfin|bada|kaios|hbbtv|crkey|aftb|aft[a-z]|"
    r"docomo|foma|softbank|vodafone|kddi|willcom|sleipnir|opr/|amiga|mosaic|beos|dooble|galaxyclient|"
    r"microsoft office")

MIN_UA_LEN = 6
PREFETCH = "prefetch"


def list_patterns() -> list[str]:
    text = resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text(encoding="utf-8")
    return [entry["pattern"] for entry in json.loads(text)]


def _re2(patterns: Iterable[str]) -> re2._Regexp:
    options = re2.Options()
    options.max_mem = 256 << 20
    options.never_capture = True
    options.log_errors = False
    return re2.compile("|".join(f"(?:{p})" for p in patterns), options)


def _needs_backtracking(pattern: str) -> bool:
    try:
        _re2([pattern])
    except re2.error:
        return True
    return False


class Bots:
    def __init__(self, patterns: Iterable[str] | None = None) -> None:
        chosen = [p for p in (list_patterns() if patterns is None else patterns) if p not in DROP_PATTERNS]
        self.listed = _re2(chosen)
        rules = [p for group in EXTRA_RULES.values() for p in group]
        # one Python-re alternation of all the rules cost ~50 µs a UA; RE2 runs them in ~1.5 µs, and
        # only the few with lookaround (which RE2 lacks) are left to re
        lookaround = [p for p in rules if _needs_backtracking(p)]
        self.ours = _re2(p for p in rules if p not in lookaround)
        self.ours_lookaround = re.compile("|".join(f"(?:{p})" for p in lookaround))
        strong = [p for name in STRONG_GROUPS for p in EXTRA_RULES[name]]
        self.strong = _re2(p for p in strong if p not in lookaround)
        self.strong_lookaround = re.compile("|".join(f"(?:{p})" for p in strong if p in lookaround))
        self.app_shell = _re2(APP_SHELLS)
        self.second_look = _re2([*APP_SHELLS, BENIGN])
        self.benign = _re2([BENIGN])  # looked for in the lower-cased UA; removed from the UA as sent
        self.benign_sub = re.compile(BENIGN, re.IGNORECASE)
        self.bare_mozilla = re.compile(BARE_MOZILLA)
        assert all("bot" in p or "spider" in p for p in lookaround), "_flagged guards look-around rules by these"
        self.by_user_agent = functools.lru_cache(maxsize=50_000)(self._judge)

    def _judge(self, user_agent: str) -> bool:
        ua = user_agent.strip()
        if len(ua) < MIN_UA_LEN:
            return True
        low = ua.lower()
        if not self._flagged(ua, low):
            return False
        if self.second_look.search(low) is None:  # most flagged UAs: one more search and done
            return True
        if self.app_shell.search(low):
            # an in-app browser, a webview or a desktop app: a human's, unless a strong sign says not
            return self.strong.search(low) is not None or (
                ("bot" in low or "spider" in low) and self.strong_lookaround.search(low) is not None)
        if self.benign.search(low) is None:
            return True
        ua = self.benign_sub.sub("", ua).strip()  # nothing left: the whole UA was a browser's own token
        return bool(ua) and (len(ua) < MIN_UA_LEN or self._flagged(ua, ua.lower()))

    def _flagged(self, ua: str, low: str) -> bool:
        # every look-around rule needs "bot" or "spider" (Python's re costs ~4 µs a UA, RE2 ~1 µs)
        return (self.listed.search(ua) is not None or self.ours.search(low) is not None
                or (("bot" in low or "spider" in low) and self.ours_lookaround.search(low) is not None)
                or (low.endswith(")") and self.bare_mozilla.search(low) is not None)
                or BROWSER_VOCAB.search(low) is None)

    def is_bot(self, method: str, headers: Mapping[str, str]) -> bool:
        if method == "HEAD":
            return True
        return bool(self.by_user_agent(headers.get("user-agent", "")))


def is_prefetch(headers: Mapping[str, str]) -> bool:
    """A browser fetching speculatively, before or without the buyer's click (prefetch, prerender
    with prefetch, Firefox's link prefetch)."""
    purpose = headers.get("sec-purpose") or headers.get("purpose") or ""
    return PREFETCH in purpose.lower() or headers.get("x-moz", "").lower() == PREFETCH
