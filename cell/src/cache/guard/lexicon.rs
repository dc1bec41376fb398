//! Word lists the guard reads questions with. Kept apart from the logic so
//! that extending a list is a one-line change that touches nothing else.

#[rustfmt::skip]
pub(super) const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"),
    ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"),
    ("twelve", "12"), ("thirteen", "13"), ("fourteen", "14"), ("fifteen", "15"),
    ("sixteen", "16"), ("seventeen", "17"), ("eighteen", "18"), ("nineteen", "19"),
    ("twenty", "20"), ("thirty", "30"), ("forty", "40"), ("fifty", "50"), ("sixty", "60"),
    ("seventy", "70"), ("eighty", "80"), ("ninety", "90"), ("hundred", "100"),
    ("thousand", "1000"), ("million", "1000000"), ("billion", "1000000000"), ("first", "1st"),
    ("second", "2nd"), ("third", "3rd"), ("fourth", "4th"), ("fifth", "5th"), ("half", "0.5"),
    ("quarter", "0.25"), ("twice", "2x"), ("double", "2x"), ("triple", "3x"), ("dozen", "12"),
    
];

/// Abbreviations of days and months, mapped to the full name.
#[rustfmt::skip]
pub(super) const DATE_ALIASES: &[(&str, &[&str])] = &[
    ("monday", &["mon"]), ("tuesday", &["tue", "tues"]), ("wednesday", &["wed"]),
    ("thursday", &["thu", "thur", "thurs"]), ("friday", &["fri"]), ("saturday", &["sat"]),
    ("sunday", &["sun"]), ("january", &["jan"]), ("february", &["feb"]), ("march", &["mar"]),
    ("april", &["apr"]), ("june", &["jun"]), ("july", &["jul"]), ("august", &["aug"]),
    ("september", &["sep", "sept"]), ("october", &["oct"]), ("november", &["nov"]),
    ("december", &["dec"]), ("autumn", &["fall"]),
];

#[rustfmt::skip]
pub(super) const DATE_WORDS: &[&str] = &[
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mon", "tue",
    "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "weekday", "weekend", "january",
    "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "q1", "q2", "q3", "q4", "h1", "h2", "today", "tomorrow", "yesterday", "tonight",
    "morning", "afternoon", "evening", "night", "noon", "midnight", "am", "pm", "spring",
    "summer", "autumn", "fall", "winter", "christmas", "easter", "holiday", "holidays", "past",
    "future", "previous", "next", "before", "after", "earlier", "later", "early", "late",
    "overnight", "quarterly", "hourly", "ago", "since", "until",
];

/// Day and month abbreviations that are also words; they count as dates only
/// when they do not read as the ordinary word.
#[rustfmt::skip]
pub(super) const AMBIGUOUS_DATE: &[&str] = &[
    "may", "mar", "sun", "sat", "wed", "dec", "fall", "march", "am",
];

#[rustfmt::skip]
pub(super) const NEGATORS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without",
    "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
    "wouldnt", "shouldnt", "couldnt", "hasnt", "havent", "hadnt", "mustnt", "except", "excluding",
    "exclude", "excludes", "excluded", "unless", "non", "disallowed", "prohibited", "forbidden",
    "unavailable", "ineligible", "unsupported", "stop", "stopped", "longer", "fail", "failed",
    "fails", "missing", "lack", "lacks", "only",
];

/// Scope words that say the same, mapped to one canonical word.
#[rustfmt::skip]
pub(super) const SCOPE_ALIASES: &[(&str, &[&str])] = &[
    ("each", &["each", "every", "per"]),
    ("max", &["max", "maximum", "most"]),
    ("min", &["min", "minimum", "least"]),
    ("more", &["more", "over", "above"]),
    ("less", &["less", "fewer", "under", "below"]),
    ("between", &["between", "across", "among"]),
    ("admin", &["admin", "admins", "administrator", "administrators"]),
    ("org", &["org", "organization", "organisation"]),
    ("employee", &["employee", "employees", "staff"]),
    ("user", &["user", "users"]),
    ("member", &["member", "members"]),
    ("customer", &["customer", "customers"]),
    ("annual", &["annual", "annually", "yearly"]),
    ("all", &["all", "everyone", "everybody"]),
];

#[rustfmt::skip]
pub(super) const SCOPE_WORDS: &[&str] = &[
    "all", "every", "each", "any", "some", "only", "everyone", "everybody", "whole", "entire",
    "admin", "admins", "administrator", "administrators", "owner", "owners", "member", "members",
    "guest", "guests", "user", "users", "team", "teams", "organization", "organisation", "org",
    "company", "companies", "department", "personal", "individual", "individuals", "business",
    "enterprise", "per", "minimum", "min", "maximum", "max", "least", "most", "first", "last",
    "monthly", "annual", "annually", "yearly", "daily", "weekly", "new", "existing", "current",
    "former", "old", "internal", "external", "employee", "employees", "contractor", "contractors",
    "staff", "manager", "managers", "customer", "customers", "partner", "partners", "student",
    "students", "child", "children", "adult", "adults", "senior", "seniors", "junior",     "shared", "public", "private", "domestic",
    "international", "local", "global", "worldwide", "national", "regional", "eu", "us", "uk",
    "full", "partial", "part", "total", "paid", "trial", "premium", "basic", "standard",
    "group", "groups", "single", "multiple", "both", "either", "other", "others", "else",
    "remote", "onsite", "hybrid", "full-time", "part-time", "temporary", "permanent", "primary",
    "secondary", "upper", "lower", "higher", "lower", "more", "less", "fewer", "over",
    "under", "above", "below", "within", "outside", "inside", "across", "between", "among",
    "everywhere", "anywhere", "somewhere", "account", "accounts", "workspace", "workspaces",
    "project", "projects", "device", "devices", "mobile", "desktop", "web", "online", "offline",
    "in-store", "store",
];

/// Words whose presence or absence does not change what is asked.
#[rustfmt::skip]
pub(super) const FILLER: &[&str] = &[
    "please", "kindly", "exactly", "actually", "currently", "now", "again", "quickly", "tell",
    "know", "want", "need", "like", "help", "way", "possible", "able", "let", "me", "us",
    "explain", "show", "give", "find", "out", "get", "go", "about", "regarding", "concerning",
    "info", "information", "details", "detail", "question", "wondering", "curious", "hi", "hello",
    "hey", "thanks", "thank", "could", "would", "should", "might", "will", "shall", "can", "may",
    "must", "ok", "okay", "just", "really", "also", "still", "anyway", "basically", "exact",
    "specific", "specifically", "correct", "right", "proper", "properly", "best", "steps", "step",
    "process", "procedure", "instructions", "guide", "method", "means", "happen", "happens",
    "work", "works", "going", "supposed", "allowed", "permitted", "there", "here", "thing",
    "things", "something", "anything", "someone", "anyone", "say", "says", "said", "mean",
    "means", "meaning", "definition", "define", "describe", "policy", "rule", "rules", "options",
    "option", "ways", "much", "many", "long", "soon", "often", "quick", "simple", "easy",
    "easiest", "fastest", "currently", "typical", "typically", "usually", "normally", "generally",
    "look", "see", "check", "am", "able",
];

#[rustfmt::skip]
pub(super) const STOPWORDS: &[&str] = &[
    "my", "our", "their", "his", "her", "your", "own", "than",
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "to", "of", "in", "on",
    "for", "and", "or", "with", "what", "which", "who", "whom", "whose", "how", "why", "when",
    "where", "do", "does", "did", "doing", "i", "you", "it", "its", "this", "that", "these",
    "those", "as", "at", "by", "from", "into", "onto", "if", "then", "so", "we", "they", "them",
    "he", "she", "him", "has", "have", "had", "having", "there", "s", "t", "d", "ll", "re", "ve",
    "m", "o", "whats", "hows", "wheres", "whens", "whos", "im", "ive", "id", "youre", "theyre",
    "up", "via", "per-", "etc", "e", "g", "ie", "eg", "yes",
];

/// Pairs of words that ask the same thing. Both directions apply.
#[rustfmt::skip]
pub(super) const EQUIVALENT: &[(&str, &str)] = &[
    ("buy", "purchase"), ("cost", "price"), ("charge", "fee"), ("cost", "fee"), ("price", "fee"),
    ("cancel", "terminate"), ("begin", "start"), ("finish", "end"), ("remove", "delete"),
    ("erase", "delete"), ("change", "modify"), ("change", "update"), ("alter", "change"),
    ("edit", "change"), ("enable", "switch"), ("create", "set"), ("restore", "recover"),
    ("change", "switch"), ("change", "set"), ("another", "different"), ("free", "clear"),
    ("often", "frequently"), ("colleague", "coworker"), ("edit", "modify"), ("get", "obtain"), ("get", "receive"),
    ("send", "submit"), ("reset", "recover"), ("sign", "log"), ("login", "log"),
    ("signin", "log"), ("signup", "register"), ("enroll", "register"), ("enrol", "register"),
    ("phone", "telephone"), ("email", "e-mail"), ("mail", "email"), ("refund", "reimbursement"),
    ("return", "send back"), ("ship", "deliver"), ("shipping", "delivery"),
    ("shipment", "delivery"), ("order", "purchase"), ("help", "support"),
    ("assistance", "support"), ("assist", "help"), ("contact", "reach"), ("call", "phone"),
    ("job", "position"), ("job", "role"), ("salary", "pay"), ("wage", "pay"),
    ("vacation", "holiday"), ("leave", "time off"), ("boss", "manager"), ("password", "passcode"),
    ("pwd", "password"), ("laptop", "computer"), ("pc", "computer"), ("app", "application"),
    ("doc", "document"), ("docs", "documents"), ("repo", "repository"),
    ("config", "configuration"), ("setup", "configure"), ("set", "configure"),
    ("install", "set up"), ("turn", "enable"), ("activate", "enable"), ("deactivate", "disable"),
    ("switch", "turn"), ("fix", "resolve"), ("fix", "repair"), ("issue", "problem"),
    ("error", "problem"), ("bug", "issue"), ("trouble", "problem"), ("big", "large"),
    ("small", "little"), ("fast", "quick"), ("rapid", "quick"), ("allowed", "permitted"),
    ("able", "can"), ("requirement", "required"), ("need", "require"), ("needed", "required"),
    ("necessary", "required"), ("mandatory", "required"), ("obligatory", "required"),
    ("choose", "select"), ("pick", "select"), ("find", "locate"), ("show", "display"),
    ("view", "see"), ("look", "view"), ("retrieve", "get"), ("fetch", "get"), ("download", "get"),
    ("upload", "add"), ("add", "include"), ("create", "make"), ("generate", "create"),
    ("open", "launch"), ("close", "shut"), ("store", "save"), ("keep", "retain"),
    ("retain", "store"), ("duration", "length"), ("long", "length"), ("period", "window"),
    ("timeframe", "window"), ("deadline", "due"), ("expire", "expiry"), ("expire", "expiration"),
    ("renew", "renewal"), ("subscribe", "subscription"), ("pay", "payment"), ("bill", "invoice"),
    ("billing", "invoice"), ("invoicing", "billing"), ("reimburse", "refund"),
    ("claim", "request"), ("ask", "request"), ("apply", "request"), ("cancellation", "cancel"),
    ("registration", "register"), ("installation", "install"), ("configuration", "configure"),
    ("deletion", "delete"), ("removal", "remove"), ("approval", "approve"),
    ("submission", "submit"), ("application", "apply"), ("requirement", "require"),
    ("eligible", "qualify"), ("eligibility", "qualify"), ("location", "where"),
    ("situated", "located"), ("hours", "open"), ("opening", "open"), ("usage", "use"),
    ("utilize", "use"), ("employ", "use"), ("reach", "contact"), ("wifi", "wi-fi"),
    ("wireless", "wifi"), ("connect", "join"), ("link", "connect"), ("procedure", "process"),
    ("amount", "much"), ("number", "many"), ("quantity", "many"),
];

/// Prefixes that negate the word they start: "invalid", "non-billable".
pub(super) const NEGATIVE_PREFIXES: &[&str] = &["non", "un", "in", "im", "il", "ir", "dis", "de"];

/// Pairs of opposites. Both directions apply.
#[rustfmt::skip]
pub(super) const ANTONYMS: &[(&str, &str)] = &[
    ("open", "closed"), ("open", "close"), ("mandatory", "optional"), ("required", "optional"),
    ("allow", "deny"), ("allow", "block"), ("allowed", "forbidden"), ("accept", "reject"),
    ("approve", "reject"), ("approve", "deny"), ("include", "exclude"), ("increase", "decrease"),
    ("raise", "lower"), ("upgrade", "downgrade"), ("add", "remove"), ("start", "stop"),
    ("start", "end"), ("begin", "end"), ("pass", "fail"), ("win", "lose"), ("import", "export"),
    ("upload", "download"), ("send", "receive"), ("buy", "sell"), ("inbound", "outbound"),
    ("incoming", "outgoing"), ("debit", "credit"), ("light", "dark"), ("enter", "exit"),
    ("arrival", "departure"), ("arrive", "depart"), ("login", "logout"), ("lock", "unlock"),
    ("hire", "fire"), ("join", "leave"), ("subscribe", "unsubscribe"), ("encrypt", "decrypt"),
    ("maximum", "minimum"), ("max", "min"), ("highest", "lowest"), ("largest", "smallest"),
    ("longest", "shortest"), ("fastest", "slowest"), ("cheapest", "most expensive"),
    ("success", "failure"), ("successful", "failed"), ("true", "false"), ("yes", "no"),
    ("permanent", "temporary"), ("synchronous", "asynchronous"), ("sync", "async"),
    ("read", "write"), ("public", "private"), ("internal", "external"), ("before", "after"),
    ("early", "late"), ("first", "last"), ("new", "old"), ("refundable", "nonrefundable"),
    ("taxable", "exempt"), ("eligible", "ineligible"), ("paid", "unpaid"), ("paid", "free"),
    ("online", "offline"), ("remote", "onsite"), ("hot", "cold"), ("wet", "dry"),
    ("positive", "negative"), ("over", "under"), ("above", "below"), ("more", "less"),
    ("most", "least"), ("visible", "hidden"), ("show", "hide"), ("enable", "disable"),
    ("activate", "deactivate"), ("connect", "disconnect"), ("mount", "unmount"),
    ("install", "uninstall"), ("freeze", "unfreeze"), ("archive", "unarchive"),
];
