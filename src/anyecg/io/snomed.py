"""SNOMED CT codes used as diagnoses in the PhysioNet/CinC Challenges 2020 and 2021.

Names and abbreviations follow the challenge's own tables (`dx_mapping_scored.csv` and
`dx_mapping_unscored.csv` of the 2021 evaluation code), with obvious spelling slips fixed. Headers
carry the codes (`# Dx: 164889003,426783006`); records keep them as strings in `Recording.labels`,
and these lookups turn them into text for reports. A code not in the table is returned unchanged.
"""

from __future__ import annotations

# (code, name, abbreviation). First block: the 30 codes scored in 2021 (26 classes once the
# equivalent pairs in SCORED_EQUIVALENT are merged).
_SCORED_2021: tuple[tuple[str, str, str], ...] = (
    ("164889003", "atrial fibrillation", "AF"),
    ("164890007", "atrial flutter", "AFL"),
    ("6374002", "bundle branch block", "BBB"),
    ("426627000", "bradycardia", "Brady"),
    ("733534002", "complete left bundle branch block", "CLBBB"),
    ("713427006", "complete right bundle branch block", "CRBBB"),
    ("270492004", "1st degree av block", "IAVB"),
    ("713426002", "incomplete right bundle branch block", "IRBBB"),
    ("39732003", "left axis deviation", "LAD"),
    ("445118002", "left anterior fascicular block", "LAnFB"),
    ("164909002", "left bundle branch block", "LBBB"),
    ("251146004", "low qrs voltages", "LQRSV"),
    ("698252002", "nonspecific intraventricular conduction disorder", "NSIVCB"),
    ("426783006", "sinus rhythm", "NSR"),
    ("284470004", "premature atrial contraction", "PAC"),
    ("10370003", "pacing rhythm", "PR"),
    ("365413008", "poor r wave progression", "PRWP"),
    ("427172004", "premature ventricular contractions", "PVC"),
    ("164947007", "prolonged pr interval", "LPR"),
    ("111975006", "prolonged qt interval", "LQT"),
    ("164917005", "qwave abnormal", "QAb"),
    ("47665007", "right axis deviation", "RAD"),
    ("59118001", "right bundle branch block", "RBBB"),
    ("427393009", "sinus arrhythmia", "SA"),
    ("426177001", "sinus bradycardia", "SB"),
    ("427084000", "sinus tachycardia", "STach"),
    ("63593006", "supraventricular premature beats", "SVPB"),
    ("164934002", "t wave abnormal", "TAb"),
    ("59931005", "t wave inversion", "TInv"),
    ("17338001", "ventricular premature beats", "VPB"),
)

_UNSCORED: tuple[tuple[str, str, str], ...] = (
    ("233892002", "accelerated atrial escape rhythm", "AAR"),
    ("164951009", "abnormal qrs", "abQRS"),
    ("251187003", "atrial escape beat", "AED"),
    ("61277005", "accelerated idioventricular rhythm", "AIVR"),
    ("426664006", "accelerated junctional rhythm", "AJR"),
    ("251139008", "suspect arm ecg leads reversed", "ALR"),
    ("57054005", "acute myocardial infarction", "AMI"),
    ("413444003", "acute myocardial ischemia", "AMIs"),
    ("426434006", "anterior ischemia", "AnMIs"),
    ("54329005", "anterior myocardial infarction", "AnMI"),
    ("251173003", "atrial bigeminy", "AB"),
    ("195080001", "atrial fibrillation and flutter", "AFAFL"),
    ("195126007", "atrial hypertrophy", "AH"),
    ("251268003", "atrial pacing pattern", "AP"),
    ("106068003", "atrial rhythm", "ARH"),
    ("713422000", "atrial tachycardia", "ATach"),
    ("233917008", "av block", "AVB"),
    ("50799005", "atrioventricular dissociation", "AVD"),
    ("29320008", "atrioventricular junctional rhythm", "AVJR"),
    ("251166008", "atrioventricular node reentrant tachycardia", "AVNRT"),
    ("233897008", "atrioventricular reentrant tachycardia", "AVRT"),
    ("251170000", "blocked premature atrial contraction", "BPAC"),
    ("418818005", "brugada", "BRU"),
    ("74615001", "brady tachy syndrome", "BTS"),
    ("426749004", "chronic atrial fibrillation", "CAF"),
    ("251199005", "counterclockwise rotation", "CCR"),
    ("61721007", "clockwise or counterclockwise vectorcardiographic loop", "CVCL/CCVCL"),
    ("698247007", "cardiac dysrhythmia", "CD"),
    ("27885002", "complete heart block", "CHB"),
    ("204384007", "congenital incomplete atrioventricular heart block", "CIAHB"),
    ("53741008", "coronary heart disease", "CHD"),
    ("413844008", "chronic myocardial ischemia", "CMI"),
    ("251198002", "clockwise rotation", "CR"),
    ("82226007", "diffuse intraventricular block", "DIB"),
    ("428417006", "early repolarization", "ERe"),
    ("13640000", "fusion beats", "FB"),
    ("164942001", "fqrs wave", "FQRS"),
    ("84114007", "heart failure", "HF"),
    ("368009", "heart valve disorder", "HVD"),
    ("251259000", "high t-voltage", "HTV"),
    ("251200008", "indeterminate cardiac axis", "ICA"),
    ("195042002", "2nd degree av block", "IIAVB"),
    ("426183003", "mobitz type ii atrioventricular block", "IIAVBII"),
    ("425419005", "inferior ischaemia", "IIs"),
    ("251120003", "incomplete left bundle branch block", "ILBBB"),
    ("704997005", "inferior st segment depression", "ISTD"),
    ("49260003", "idioventricular rhythm", "IR"),
    ("426995002", "junctional escape", "JE"),
    ("251164006", "junctional premature complex", "JPC"),
    ("426648003", "junctional tachycardia", "JTach"),
    ("253352002", "left atrial abnormality", "LAA"),
    ("67741000119109", "left atrial enlargement", "LAE"),
    ("446813000", "left atrial hypertrophy", "LAH"),
    ("425623009", "lateral ischaemia", "LIs"),
    ("445211001", "left posterior fascicular block", "LPFB"),
    ("164873001", "left ventricular hypertrophy", "LVH"),
    ("55827005", "left ventricular high voltage", "LVHV"),
    ("370365005", "left ventricular strain", "LVS"),
    ("164865005", "myocardial infarction", "MI"),
    ("164861001", "myocardial ischemia", "MIs"),
    ("54016002", "mobitz type i wenckebach atrioventricular block", "MoI"),
    ("428750005", "nonspecific st t abnormality", "NSSTTA"),
    ("164867002", "old myocardial infarction", "OldMI"),
    ("282825002", "paroxysmal atrial fibrillation", "PAF"),
    ("251205003", "prolonged p wave", "PPW"),
    ("67198005", "paroxysmal supraventricular tachycardia", "PSVT"),
    ("425856008", "paroxysmal ventricular tachycardia", "PVT"),
    ("164912004", "p wave change", "PWC"),
    ("253339007", "right atrial abnormality", "RAAb"),
    ("164921003", "r wave abnormal", "RAb"),
    ("446358003", "right atrial hypertrophy", "RAH"),
    ("67751000119106", "right atrial high voltage", "RAHV"),
    ("314208002", "rapid atrial fibrillation", "RAF"),
    ("89792004", "right ventricular hypertrophy", "RVH"),
    ("17366009", "sinus atrium to atrial wandering rhythm", "SAAWR"),
    ("65778007", "sinoatrial block", "SAB"),
    ("5609005", "sinus arrest", "SARR"),
    ("60423000", "sinus node dysfunction", "SND"),
    ("49578007", "shortened pr interval", "SPRI"),
    ("77867006", "decreased qt interval", "SQT"),
    ("55930002", "s t changes", "STC"),
    ("429622005", "st depression", "STD"),
    ("164931005", "st elevation", "STE"),
    ("164930006", "st interval abnormal", "STIAb"),
    ("251168009", "supraventricular bigeminy", "SVB"),
    ("426761007", "supraventricular tachycardia", "SVT"),
    ("266257000", "transient ischemic attack", "TIA"),
    ("251223006", "tall p wave", "TPW"),
    ("164937009", "u wave abnormal", "UAb"),
    ("11157007", "ventricular bigeminy", "VBig"),
    ("164884008", "ventricular ectopics", "VEB"),
    ("75532003", "ventricular escape beat", "VEsB"),
    ("81898007", "ventricular escape rhythm", "VEsR"),
    ("164896001", "ventricular fibrillation", "VF"),
    ("111288001", "ventricular flutter", "VFL"),
    ("266249003", "ventricular hypertrophy", "VH"),
    ("195060002", "ventricular pre excitation", "VPEx"),
    ("251266004", "ventricular pacing pattern", "VPP"),
    ("251182009", "paired ventricular premature complexes", "VPVC"),
    ("164895002", "ventricular tachycardia", "VTach"),
    ("251180001", "ventricular trigeminy", "VTrig"),
    ("195101003", "wandering atrial pacemaker", "WAP"),
    ("74390002", "wolff parkinson white pattern", "WPW"),
)

SNOMED_TABLE: dict[str, tuple[str, str]] = {
    code: (name, abbreviation) for code, name, abbreviation in _SCORED_2021 + _UNSCORED
}
SCORED_2021: frozenset[str] = frozenset(code for code, _, _ in _SCORED_2021)
# Pairs the 2021 challenge scores as one diagnosis: code -> the code it counts as.
SCORED_EQUIVALENT: dict[str, str] = {
    "733534002": "164909002",  # CLBBB -> LBBB
    "713427006": "59118001",  # CRBBB -> RBBB
    "63593006": "284470004",  # SVPB -> PAC
    "17338001": "427172004",  # VPB -> PVC
}


def _key(code: str | int) -> str:
    return str(code).strip()


def snomed_name(code: str | int) -> str:
    """Full name of a SNOMED CT code ("atrial fibrillation"); the code itself when unknown."""
    entry = SNOMED_TABLE.get(_key(code))
    return entry[0] if entry else _key(code)


def snomed_abbreviation(code: str | int) -> str:
    """Challenge abbreviation of a SNOMED CT code ("AF"); the code itself when unknown."""
    entry = SNOMED_TABLE.get(_key(code))
    return entry[1] if entry else _key(code)
