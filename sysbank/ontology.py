"""Keyword tagging of constraints with the paper's constraint ontology (its Appendix F, Table 15).

The ontology has six top-level kinds: content, format, style, role, logic and behaviour. SysBank
does not label its constraints, so `stats` and the web page tag them by keywords (English and
Chinese). A constraint may carry several tags; one matching none is `other`. This is a browsing
aid, not a classifier: it says roughly which kinds a corpus leans on.
"""

from __future__ import annotations

import re

CATEGORIES = ("content", "format", "style", "role", "logic", "behaviour")
OTHER = "other"

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "content": (
        r"\bmention", r"\binclud", r"\bcontain", r"\bkeyword", r"\bemoji", r"\bquot", r"\bidiom", r"\bjoke",
        r"\bexample", r"\bstart(s|ing)? with", r"\bbegin(s|ning)? with", r"\bend(s|ing)? with", r"\bthe word",
        r"\bthe phrase", r"\bcatchphrase", r"\bsign(s|ing)?[- ]?off", r"\bpunctuation", r"\bexclamation",
        r"\b(start|begin)s? (every|each|all|the|your|its)\b", r"\bproverb", r"\bdescribe", r"\bdiscuss",
        r"\bcomment on", r"\bpromise", r"\bformula",
        "出现", "评价", "讨论", "提到", "提及", "包含", "含有", "表情", "引用", "成语", "笑话", "例子", "举例", "开头", "结尾", "一词", "关键词",
        "口头禅", "标点", "感叹号",
    ),
    "format": (
        r"\bjson\b", r"\bmarkdown", r"\bbullet", r"\bnumbered", r"\blist\b", r"\btable\b", r"\bheading",
        r"\btitle", r"\bbold", r"\bitalic", r"\bparagraph", r"\btemplate", r"\bformat", r"\bwords?\b",
        r"\bcharacters\b", r"\bsentences?\b", r"\blines?\b", r"\bsections?\b", r"\bat most \d", r"\bat least \d",
        r"\bno more than", r"\bfewer than", r"\bexactly \d", r"\bangle brackets", r"\bcode block",
        r"\bat most (one|two|three|four|five|six|seven|eight|nine|ten)\b", r"\bnotation", r"\bdecimal",
        r"\d+\s*字", "小数", "精确到", "单位",
        "格式", "列表", "字以内", "字数", "个字", "段落", "加粗", "斜体", "标题", "表格", "句", "分点", "条建议",
        "不超过", "至少", "模板",
    ),
    "style": (
        r"\btone\b", r"\bformal", r"\binformal", r"\bpolite", r"\bhumou?r", r"\bsarcas", r"\bfriendly",
        r"\bprofessional", r"\bpoe(m|tic|try)", r"\bstyle\b", r"\bmetaphor", r"\bsimile", r"\brhetorical",
        r"\bas if (speaking|talking|explaining) to", r"\bchild", r"\bin (english|chinese|french|spanish|german)",
        r"\buppercase", r"\blowercase", r"\bcapital", r"\bpinyin", r"\bvoice\b", r"\bcheerful", r"\bpositive",
        "说话一样", "小朋友",
        "语气", "风格", "幽默", "礼貌", "比喻", "诗", "英文", "中文", "英语", "口吻", "文言", "拟人", "反问", "大写",
        "小写", "拼音", "积极", "热情",
    ),
    "role": (
        r"\brefer(s|ring)? to (itself|yourself|oneself|himself|herself|the company)", r"\bintroduc(e|es|ing) (itself|yourself)",
        r"\bidentity", r"\bpersona\b", r"\bfirst person", r"\bthird person", r"\bparenthes", r"\bnarrat",
        r"\bcall (itself|yourself)", r"\bself-reference", r"\bin character",
        "自称", "身份", "自我介绍", "第一人称", "第三人称", "括号", "旁白", "扮演",
    ),
    "logic": (
        r"\bcalculat", r"\bcompute", r"\bmath", r"\barithmetic", r"\bplus one", r"\badd(ed)? one",
        r"\bincrease(d)? by", r"\bmultipl", r"\bround(ed)? (up|down|to)", r"\bodd number", r"\beven number",
        r"\bsum\b", r"\bpercent", r"\bconvert",
        "计算", "加一", "数学", "奇数", "偶数", "乘以", "求和", "百分", "换算", "四舍五入",
    ),
    "behaviour": (
        r"\brefus", r"\bdecline", r"\bclarif", r"\binvit", r"\bredirect", r"\bsteer", r"\bi don'?t know",
        r"\bask(s)? (the user|a follow-up|for)", r"\bwarn", r"\bdisclaimer", r"\brecommend", r"\bsuggest",
        r"\bencourag", r"\bfollow-up question", r"\bapologi", r"\bask (which|what|whether|how)", r"\bthank",
        r"\bposition opposite", r"\bopposite (side|position)",
        "拒绝", "澄清", "邀请", "引导", "转移话题", "询问", "反问用户", "提醒", "建议", "推荐", "鼓励", "道歉", "免责",
    ),
}

# Python's `re` scans an alternation of plain words many times faster than one whose branches all
# start with `\b` (tagging 200k constraints: ~1 s instead of ~10 s), so the leading word boundary is
# checked by hand on each candidate match instead, on lowercased text.
_PATTERNS = {cat: re.compile("|".join(w.removeprefix(r"\b") for w in words)) for cat, words in _KEYWORDS.items()}


def _starts_word(text: str, start: int) -> bool:
    """A match of an English keyword must start a word; a Chinese one may start anywhere."""
    first = text[start]
    if not (first.isascii() and first.isalnum()):
        return True
    return start == 0 or not (text[start - 1].isascii() and (text[start - 1].isalnum() or text[start - 1] == "_"))


def _has_keyword(pattern: re.Pattern[str], text: str) -> bool:
    match = pattern.search(text)
    while match is not None:
        if _starts_word(text, match.start()):
            return True
        match = pattern.search(text, match.start() + 1)
    return False


def categorize(constraint: str) -> list[str]:
    """Ontology kinds whose keywords occur in one constraint (`['other']` when none does)."""
    text = constraint.lower()
    found = [cat for cat in CATEGORIES if _has_keyword(_PATTERNS[cat], text)]
    return found or [OTHER]
