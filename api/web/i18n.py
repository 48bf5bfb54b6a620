"""Labels of the web pages in Chinese and English, and which language a request gets.

Choice: ``?lang=`` (remembered in a cookie) -> the cookie -> the browser's ``Accept-Language``
-> the ``JIAYI_UI_LANGUAGE`` setting. Every label has both languages; a missing key shows the
key itself, so a typo is visible rather than fatal.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("zh", "en")
COOKIE = "jiayi_lang"

#: key -> (English, Chinese)
LABELS: dict[str, tuple[str, str]] = {
    # frame
    "app_name": ("Jiayi care coordination", "家医 · 签约与转诊协同"),
    "language": ("Language", "语言"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "token": ("Access token", "访问令牌"),
    "token_help": (
        "Paste a token issued with `jiayi tokens issue`. The pages show only what it may see.",
        "粘贴用 `jiayi tokens issue` 签发的令牌。页面只显示该令牌有权查看的内容。",
    ),
    "signed_in_as": ("Signed in as", "当前用户"),
    "invalid_token": ("The token is unknown or revoked.", "令牌无效或已被吊销。"),
    "session_expired": ("Please sign in again.", "请重新登录。"),
    "csrf_failed": (
        "The form expired; please try again.",
        "表单已过期，请重试。",
    ),
    "nav_patients": ("Patients", "患者"),
    "nav_teams": ("Team workload", "团队工作量"),
    "nav_hospital": ("Hospital worklist", "医院待办"),
    "nav_center": ("Center worklist", "社区待办"),
    "not_found": ("Nothing with that id is visible to you.", "未找到，或您无权查看。"),
    "forbidden": ("Your role may not open this page.", "您的角色无权打开此页面。"),
    "as_of_auditors": (
        "Only auditors view the records as of a past moment.",
        "只有审计人员可以查看过去某一时刻的记录。",
    ),
    "unavailable": (
        "The records are not available right now; try again shortly.",
        "数据暂不可用，请稍后重试。",
    ),
    "damaged": (
        "A stored record failed its integrity check; the operators have been told.",
        "一条存储的记录未通过完整性校验，已通知运维人员。",
    ),
    "error": ("Something went wrong", "出错了"),
    "back": ("Back", "返回"),
    "done": ("Done.", "已完成。"),
    # roles
    "role_center_staff": ("community center staff", "社区卫生服务中心人员"),
    "role_hospital_staff": ("hospital staff", "医院人员"),
    "role_coordinator": ("district coordinator", "区协调员"),
    "role_auditor": ("auditor", "审计人员"),
    "role_administrator": ("administrator", "管理员"),
    # search
    "search": ("Search", "搜索"),
    "search_placeholder": ("Name, resident id or patient id", "姓名、身份证号或患者编号"),
    "search_hint": (
        "Find a patient by name (part of it) or by id, within what you may see.",
        "按姓名（可部分匹配）或编号查找您有权查看的患者。",
    ),
    "no_results": ("No patient found.", "未找到患者。"),
    "name": ("Name", "姓名"),
    "sex": ("Sex", "性别"),
    "sex_F": ("female", "女"),
    "sex_M": ("male", "男"),
    "birth_date": ("Born", "出生日期"),
    "district": ("District", "区"),
    "contract": ("Contract", "签约"),
    "contracted": ("contracted", "已签约"),
    "not_contracted": ("no contract", "未签约"),
    "open": ("Open", "打开"),
    # the read access log (auditors)
    "nav_access": ("Who read", "查阅记录"),
    "access_title": ("Who read this patient", "谁查阅了该患者"),
    "access_hint": (
        "Every read of a patient's data is recorded: who, which organisation and role, what, "
        "when and how many rows. Newest first. Your reading of this page is recorded too.",
        "对患者数据的每一次查阅都会被记录：查阅人、机构与角色、查阅内容、时间和条数，最新的在前。"
        "您查看本页也会被记录。",
    ),
    "access_patient": ("Patient id", "患者编号"),
    "access_none": ("No reads recorded for this patient.", "该患者暂无查阅记录。"),
    "access_link": ("Who read this patient", "查阅记录"),
    "access_report_csv": ("Access report (CSV)", "查阅报告（CSV）"),
    "rows": ("Rows", "条数"),
    "role": ("Role", "角色"),
    "resource": ("What was read", "查阅内容"),
    "resource_registry": ("registry entry", "登记信息"),
    "resource_search": ("search result", "搜索结果"),
    "resource_timeline": ("timeline", "就医时间线"),
    "resource_referral": ("referral", "转诊单"),
    "resource_quota": ("quota bookings", "号源预约"),
    "resource_worklist.hospital": ("hospital worklist", "医院待办"),
    "resource_worklist.center": ("center worklist", "社区待办"),
    "resource_access-log": ("access log", "查阅记录"),
    "resource_access-report": ("access report", "查阅报告"),
    "earlier": ("Earlier", "更早"),
    "later": ("Later", "更近"),
    # journey
    "journey": ("Patient journey", "患者就医历程"),
    "key_populations": ("Key populations", "重点人群"),
    "current_contract": ("Current contract", "当前签约"),
    "team": ("Team", "团队"),
    "package": ("Package", "服务包"),
    "period": ("Period", "期限"),
    "moved_away": ("moved away", "已迁出"),
    "as_of": ("As of", "截至"),
    "as_of_view": ("View as of", "查看历史时刻"),
    "as_of_banner": ("Records as they stood at", "以下为该时刻的记录："),
    "live": ("Back to now", "返回当前"),
    "show": ("Show", "查看"),
    "today": ("today", "今天"),
    "legend": ("Legend", "图例"),
    "legend_contract": ("contract period", "签约期"),
    "legend_referral": ("referral up and back", "上转与下转"),
    "legend_green": ("green channel", "绿色通道"),
    "legend_overdue": ("overdue", "逾期"),
    "legend_followup": ("follow-up", "随访"),
    "legend_booking": ("expert / bed booking", "专家号 / 床位预约"),
    "referrals": ("Referrals", "转诊"),
    "lane_center": ("community health center", "社区卫生服务中心"),
    "lane_hospital": ("hospital", "医院"),
    "no_referrals": ("No referrals.", "暂无转诊。"),
    "steps": ("Steps", "步骤"),
    "waited": ("after", "间隔"),
    "total_wait": ("Request to decision", "申请至决定"),
    "follow_up_due": ("Follow-up due", "随访截止"),
    "followed_up_on": ("Followed up on", "已随访"),
    "overdue": ("overdue", "逾期"),
    "green_channel": ("green channel", "绿色通道"),
    "awaiting_decision": ("awaiting decision", "待接收"),
    "all_entries": ("Everything that happened", "全部记录"),
    "overdue_follow_ups": ("Overdue follow-ups", "逾期随访"),
    "open_follow_ups": ("Open follow-ups (ids a visit may name)", "待完成随访（可指定的任务号）"),
    "when": ("When", "时间"),
    "recorded": ("Recorded", "录入时间"),
    "who": ("Who", "操作人"),
    "organisation": ("Organisation", "机构"),
    "what": ("What", "事项"),
    "details": ("Details", "详情"),
    "no_entries": ("Nothing recorded yet.", "暂无记录。"),
    "department": ("Department", "科室"),
    "urgency": ("Urgency", "紧急程度"),
    "urgency_routine": ("routine", "普通"),
    "urgency_urgent": ("urgent", "紧急"),
    "urgency_emergency": ("emergency", "急诊"),
    "status": ("Status", "状态"),
    "status_requested": ("awaiting decision", "待接收"),
    "status_accepted": ("accepted", "已接收"),
    "status_rejected": ("rejected", "已拒绝"),
    "status_cancelled": ("cancelled", "已取消"),
    "status_arrived": ("arrived", "已到院"),
    "status_admitted": ("admitted", "已住院"),
    "status_returned": ("returned to community", "已下转"),
    "status_acknowledged": ("return acknowledged", "社区已接收"),
    "direction_up": ("referral up", "上转"),
    "direction_down": ("return to community", "下转"),
    # timeline kinds
    "kind_registry.registered": ("registered", "建档"),
    "kind_registry.tagged": ("key population recorded", "登记重点人群"),
    "kind_registry.untagged": ("key population removed", "移除重点人群"),
    "kind_registry.moved_away": ("moved away", "迁出"),
    "kind_registry.erased": ("erased", "已删除个人信息"),
    "kind_registry.transferred": ("care moved", "转移管理"),
    "kind_contract.signed": ("contract signed", "签约"),
    "kind_contract.renewed": ("contract renewed", "续约"),
    "kind_contract.terminated": ("contract terminated", "解约"),
    "kind_contract.expired": ("contract expired", "签约到期"),
    "kind_team.changed": ("team changed", "更换团队"),
    "kind_referral.requested": ("referred up", "申请上转"),
    "kind_referral.accepted": ("accepted by hospital", "医院接收"),
    "kind_referral.rejected": ("rejected by hospital", "医院拒绝"),
    "kind_referral.cancelled": ("referral cancelled", "转诊取消"),
    "kind_referral.arrived": ("arrived at hospital", "到院"),
    "kind_referral.admitted": ("admitted", "入院"),
    "kind_return.started": ("returned by hospital", "医院下转"),
    "kind_return.returned": ("returned to community", "下转回社区"),
    "kind_return.acknowledged": ("return acknowledged", "社区确认接收"),
    "kind_booking.booked": ("slot booked", "预约号源"),
    "kind_booking.cancelled": ("booking cancelled", "取消预约"),
    "kind_booking.attended": ("attended", "已就诊"),
    "kind_booking.no_show": ("did not attend", "爽约"),
    "kind_follow_up.scheduled": ("follow-ups scheduled", "安排随访"),
    "kind_follow_up.withdrawn": ("follow-ups withdrawn", "撤销随访"),
    "kind_follow_up.visit": ("follow-up visit", "随访"),
    # tags
    "tag_pregnant_postpartum": ("pregnant / postpartum", "孕产妇"),
    "tag_disability": ("disability", "残疾人"),
    "tag_registered_poor": ("registered poor", "建档立卡贫困人口"),
    "tag_family_planning_special": ("family-planning special family", "计划生育特殊家庭"),
    "tag_hypertension": ("hypertension", "高血压"),
    "tag_type2_diabetes": ("type 2 diabetes", "2型糖尿病"),
    "tag_tuberculosis": ("tuberculosis", "结核病"),
    "tag_severe_mental_disorder": ("severe mental disorder", "严重精神障碍"),
    "tag_aged_65_plus": ("aged 65+", "65岁及以上老年人"),
    "tag_child_0_6": ("child 0-6", "0-6岁儿童"),
    "derived_tag": ("from the birth date (not recorded)", "按出生日期推算（非登记）"),
    # follow-up obligations
    "reason_type2_diabetes": ("type 2 diabetes (quarterly)", "2型糖尿病（季度随访）"),
    "reason_severe_mental_disorder": ("severe mental disorder", "严重精神障碍随访"),
    "reason_chronic_disease": ("chronic disease (yearly)", "慢性病（年度随访）"),
    "reason_after_referral": ("within 2 weeks after referral", "转诊后2周内随访"),
    "reason_return_to_community": ("after return to community", "下转后随访"),
    # workload
    "teams": ("Teams", "团队"),
    "no_teams": ("No team visible to you.", "没有您可查看的团队。"),
    "workload": ("Workload", "工作量"),
    "member": ("Member", "成员"),
    "members": ("Members", "成员"),
    "active_contracts": ("Active contracts", "有效签约"),
    "key_population_contracts": ("Key-population contracts", "重点人群签约"),
    "other_contracts": ("Other contracts", "其他签约"),
    "referrals_sent_this_month": ("Referrals sent this month", "本月上转"),
    "referrals_awaiting_decision": ("Referrals awaiting decision", "待医院接收"),
    "returns_awaiting_acknowledgement": ("Returns to acknowledge", "待确认下转"),
    "follow_ups_due_7_days": ("Follow-ups due in 7 days", "7天内到期随访"),
    "follow_ups_overdue": ("Follow-ups overdue", "逾期随访"),
    "follow_ups_completed_this_month": ("Follow-ups done this month", "本月完成随访"),
    "bookings_next_7_days": ("Bookings next 7 days", "未来7天预约"),
    "follow_ups_chart": ("Follow-ups", "随访"),
    "contracts_chart": ("Contracts by key population", "签约（按重点人群）"),
    "due": ("due", "到期"),
    "overdue_short": ("overdue", "逾期"),
    "done_short": ("done", "完成"),
    "key_population": ("key population", "重点人群"),
    "others": ("others", "其他"),
    "unassigned": ("not attributed to a member", "未归属成员"),
    # worklists
    "hospital_worklist": ("Referrals awaiting decision", "待接收的上转"),
    "center_worklist": ("Community center worklist", "社区待办"),
    "returns_to_acknowledge": ("Returns to acknowledge", "待确认的下转"),
    "worklist_empty": ("Nothing waiting.", "暂无待办。"),
    "choose_org": ("Organisation id", "机构编号"),
    "patient": ("Patient", "患者"),
    "requested_at": ("Requested", "申请时间"),
    "returned_at": ("Returned", "下转时间"),
    "waiting": ("Waiting", "已等待"),
    "decision_due": ("Decision due by", "决定期限"),
    "decision_overdue": ("decision overdue", "决定逾期"),
    # the two-way referral form (双向转诊单)
    "form_title": ("Two-way referral form", "双向转诊单"),
    "form_stub": ("Stub", "存根"),
    "form_transfer": ("Transfer form (up)", "转出单"),
    "form_return": ("Return form", "回转单"),
    "form_open": ("Form", "转诊单"),
    "form_print": ("Print", "打印"),
    "form_back": ("Back to the journey", "返回患者旅程"),
    "form_patient": ("Patient", "患者姓名"),
    "form_sex": ("Sex", "性别"),
    "form_age": ("Age", "年龄"),
    "form_record": ("Record no.", "档案编号"),
    "form_from": ("From", "转出单位"),
    "form_to": ("To", "转入单位"),
    "form_impression": ("Initial impression", "初步印象"),
    "form_present": ("Present illness, reason", "主要现病史（转出原因）"),
    "form_past": ("Past history", "主要既往史"),
    "form_treatment": ("Treatment so far", "治疗经过"),
    "form_doctor": ("Referring doctor", "转诊医生"),
    "form_phone": ("Contact number", "联系电话"),
    "form_date": ("Date", "日期"),
    "form_diagnosis": ("Diagnosis", "诊断结果"),
    "form_inpatient": ("Inpatient record no.", "住院病案号"),
    "form_results": ("Key results", "主要检查结果"),
    "form_prescriptions": ("Continued prescriptions", "继续用药"),
    "form_next": ("Next plan", "下一步治疗方案"),
    "form_rehab": ("Rehabilitation advice", "康复建议"),
    "form_follow_up": ("Follow-up due", "随访日期"),
    "form_returned_by": ("Returned by", "回转单位"),
    "reason": ("Reason", "原因"),
    "actions": ("Actions", "操作"),
    "accept": ("Accept", "接收"),
    "reject": ("Reject", "拒绝"),
    "acknowledge": ("Acknowledge", "确认接收"),
    "note": ("Note", "备注"),
    "accepted_msg": ("Referral accepted.", "已接收转诊。"),
    "rejected_msg": ("Referral rejected.", "已拒绝转诊。"),
    "acknowledged_msg": ("Return acknowledged.", "已确认下转。"),
    "transfers_to_release": ("Transfer requests to release", "待处理的转出申请"),
    "transfers_requested": ("Transfer requests you made", "本中心发起的转入申请"),
    "requesting_center": ("Asking center", "申请机构"),
    "consent": ("Consent", "知情同意"),
    "release": ("Release", "同意转出"),
    "decline": ("Decline", "拒绝"),
    "withdraw": ("Withdraw", "撤回"),
    "request_transfer": ("Ask for a resident of another center", "申请转入其他中心的居民"),
    "request_transfer_help": (
        "Name the resident as they came to you; their center releases or declines.",
        "请按居民本人提供的身份证号和姓名填写；原签约中心同意后方转入。",
    ),
    "national_id": ("Resident id number", "身份证号"),
    "transfer_requested_msg": ("Transfer requested.", "已提交转入申请。"),
    "released_msg": ("Patient released to the asking center.", "已同意转出。"),
    "declined_msg": ("Transfer declined.", "已拒绝转出申请。"),
    "withdrawn_msg": ("Transfer request withdrawn.", "已撤回转入申请。"),
    "kind_transfer.requested": ("transfer requested", "申请转入"),
    "kind_transfer.released": ("transfer released", "同意转出"),
    "kind_transfer.declined": ("transfer declined", "拒绝转出"),
    "kind_transfer.withdrawn": ("transfer withdrawn", "撤回转入申请"),
    "kind_access.home_started": ("care relation: registered center", "照护关系：签约中心开始"),
    "kind_access.home_ended": ("care relation ended: registered center", "照护关系：签约中心结束"),
    "kind_access.referral_started": ("care relation: referral hospital", "照护关系：转诊医院开始"),
    "kind_access.referral_ended": (
        "care relation ended: referral hospital",
        "照护关系：转诊医院结束",
    ),
    "kind_access.return_started": ("care relation: returning hospital", "照护关系：下转医院开始"),
    "kind_access.return_ended": (
        "care relation ended: returning hospital",
        "照护关系：下转医院结束",
    ),
    "kind_access.transfer_started": ("care relation: center asking", "照护关系：申请转入中心开始"),
    "kind_access.transfer_ended": (
        "care relation ended: center asking",
        "照护关系：申请转入中心结束",
    ),
    "reason_no_capacity": ("no capacity", "床位/号源不足"),
    "reason_not_indicated": ("not indicated", "无转诊指征"),
    "reason_wrong_department": ("wrong department", "科室不符"),
    "reason_incomplete_form": ("incomplete form", "转诊单不完整"),
    "reason_patient_declined": ("patient declined", "患者拒绝"),
    "reason_other": ("other", "其他"),
    "unit_min": ("min", "分钟"),
    "unit_h": ("h", "小时"),
    "unit_d": ("d", "天"),
    # provable history (auditors)
    "nav_verification": ("Log verification", "日志校验"),
    "verification_intro": (
        "Every stored event is chained (SHA-256) and the chain's head is sealed with a key kept "
        "outside the database. A verification walks the log and names every event that is not "
        "as it was recorded.",
        "每条存储事件均以 SHA-256 链接成链，链头以数据库之外保管的密钥签名封存。校验会遍历日志，"
        "指出每一条与记录时不一致的事件。",
    ),
    "verification_last": ("Last verification", "最近一次校验"),
    "verification_none": ("No verification has been made yet.", "尚未进行过校验。"),
    "verification_running": ("A verification is running.", "校验进行中。"),
    "verification_ok": ("Every event is as recorded.", "所有事件均与记录一致。"),
    "verification_broken": ("Broken links found", "发现链接损坏"),
    "verification_start": ("Verify now", "立即校验"),
    "verification_after": ("after position", "起始位置之后"),
    "verification_limit": ("at most", "最多"),
    "verification_started": ("Verification started.", "校验已开始。"),
    "verification_busy": ("A verification is running already.", "已有校验在进行中。"),
    "positions": ("positions", "位置"),
    "events_checked": ("events", "事件"),
    "seals_checked": ("seals", "封印"),
    "requested_by": ("requested by", "发起人"),
    "finished_at": ("finished", "完成于"),
    "position": ("position", "位置"),
    "finding_kind": ("what happened", "情况"),
    "aggregate": ("aggregate", "聚合"),
    "event_type": ("event", "事件"),
    "detail": ("detail", "说明"),
}


def pick(query: str | None, cookie: str | None, accept_language: str | None, default: str) -> str:
    """The language for a request (see the module docstring)."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    for part in sorted(_accepted(accept_language or ""), key=lambda p: -p[1]):
        primary = part[0].split("-")[0].lower()
        if primary in LANGUAGES:
            return primary
    return default if default in LANGUAGES else LANGUAGES[0]


def _accepted(header: str) -> list[tuple[str, float]]:
    out = []
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if name:
            out.append((name, q))
    return out


@dataclass(frozen=True)
class Labels:
    """``t("key")`` in templates: the label in this language."""

    lang: str

    def __call__(self, key: str, fallback: str | None = None) -> str:
        found = LABELS.get(key)
        if found is None:
            return fallback if fallback is not None else key
        return found[1] if self.lang == "zh" else found[0]

    def kind(self, kind: str) -> str:
        return self(f"kind_{kind}", kind)
